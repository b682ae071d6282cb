import { describe, expect, it } from 'vitest';
import { RjobError } from '../errors.js';
import { createMemoryLink, type MemoryLink } from '../testing/memory-transport.js';
import { clientHandshake, serverHandshake } from './handshake.js';
import { decodeMessage } from './messages.js';
import { ReliableChannel, type ReliableChannelOptions } from './reliable-channel.js';

const options: ReliableChannelOptions = { pingIntervalMs: 0, heartbeatTimeoutMs: 0, windowMessages: 512 };

describe('resume across link cuts', () => {
  it('delivers 100,000 numbered messages exactly once, in order, through 20 cuts', async () => {
    const total = 100_000;
    const cuts = 20;
    const server = new ReliableChannel(options);
    const client = new ReliableChannel(options);
    let session: { sessionId: string; resumeSecret: string } | undefined;
    let link: MemoryLink | undefined;
    const serverOptions = {
      open: () => ({ sessionId: 'session-1', resumeSecret: 'secret-1', channel: server }),
      resume: (request: { sessionId: string; resumeSecret: string }) => {
        if (request.resumeSecret !== 'secret-1')
          throw new RjobError('ERR_SESSION_NOT_FOUND', 'No such session.');
        return server;
      },
    };
    const connect = async (): Promise<void> => {
      link = createMemoryLink();
      const [, result] = await Promise.all([
        serverHandshake(link.b, serverOptions),
        clientHandshake(link.a, { channel: client, ...(session ? { resume: session } : {}) }),
      ]);
      if (result.resumeSecret) session = { sessionId: result.sessionId, resumeSecret: result.resumeSecret };
    };
    await connect();

    // Cut points spread over the run: half of them from the consumer (whatever is in flight is
    // lost), half from the producer's side right after a send.
    const cutAtReceived = new Set(Array.from({ length: cuts / 2 }, (_, i) => 3_000 + i * 9_000));
    const cutAtSent = new Set(Array.from({ length: cuts / 2 }, (_, i) => 7_500 + i * 9_100));
    let cutsDone = 0;
    let cutsOwed = 0;
    let reconnecting: Promise<void> | undefined;
    // A cut point reached while the link is already down is kept for the next link, so every
    // cut really happens on a live link.
    const cut = (): void => {
      cutsOwed++;
      if (!link || link.closed) return;
      cutsOwed--;
      link.cut();
      cutsDone++;
      reconnecting = (async () => {
        await new Promise<void>((resolve) => setImmediate(resolve));
        await connect();
        if (cutsOwed > 0) {
          cutsOwed--;
          cut();
        }
      })();
    };

    const received: number[] = [];
    let duplicatesOrGaps = 0;
    let allReceived!: () => void;
    const done = new Promise<void>((resolve) => {
      allReceived = resolve;
    });
    client.onMessage((message) => {
      const n = (message as { data: number }).data;
      if (n !== received.length) duplicatesOrGaps++;
      received.push(n);
      if (cutAtReceived.has(received.length)) cut();
      if (received.length === total) allReceived();
    });

    for (let n = 0; n < total; n++) {
      const accepted = server.send({ type: 'event', name: 'line', data: n });
      if (cutAtSent.has(n)) cut();
      if (!accepted) await server.drain();
    }
    await done;
    await reconnecting;

    expect(cutsDone).toBe(cuts);
    expect(duplicatesOrGaps).toBe(0);
    expect(received.length).toBe(total);
    for (let i = 0; i < total; i++) if (received[i] !== i) throw new Error(`message ${i} is ${received[i]}`);
    // Every message is eventually acknowledged and the replay buffer empties.
    for (let i = 0; i < 1000 && server.ackedSeq < total; i++) await new Promise<void>((r) => setImmediate(r));
    expect(server.ackedSeq).toBe(total);
    expect(server.stats().inFlightMessages).toBe(0);
  });
});

describe('a link that closes as the handshake ends', () => {
  it('fails the handshake (ERR_LINK_CLOSED) rather than attach the channel to a dead link', async () => {
    for (const kind of ['open', 'resume'] as const) {
      const server = new ReliableChannel(options);
      const serverOptions = {
        open: () => ({ sessionId: 'session-1', resumeSecret: 'secret-1', channel: server }),
        resume: () => server,
      };
      const client = new ReliableChannel(options);
      if (kind === 'resume') {
        const first = createMemoryLink();
        await Promise.all([
          serverHandshake(first.b, serverOptions),
          clientHandshake(first.a, { channel: client }),
        ]);
        first.cut();
      }
      const link = createMemoryLink();
      // The link dies in the same turn as the server's last handshake message reaches the client,
      // before the client's handshake goes on from it.
      link.a.onMessage((frame) => {
        const { type } = decodeMessage(frame);
        if (type === 'opened' || type === 'resumed') queueMicrotask(() => link.cut());
      });
      const handshake = clientHandshake(link.a, {
        channel: client,
        ...(kind === 'resume' ? { resume: { sessionId: 'session-1', resumeSecret: 'secret-1' } } : {}),
      });
      void serverHandshake(link.b, serverOptions).catch(() => {});
      const error = await handshake.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(RjobError.hasCode(error, 'ERR_LINK_CLOSED'), `${kind}: ${String(error)}`).toBe(true);
    }
  });
});
