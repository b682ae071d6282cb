/**
 * Session takeover (docs/protocol.md, "Session takeover"): a client channel that holds none of the
 * session's state (a new process with only the id and secret) takes the session over from the
 * server's channel, which may have carried messages both ways and may still be attached.
 */
import { describe, expect, it } from 'vitest';
import { RjobError } from '../errors.js';
import { createMemoryLink, type MemoryLink } from '../testing/memory-transport.js';
import { clientHandshake, type ServerHandshakeOptions, serverHandshake } from './handshake.js';
import { decodeMessage, encodeMessage, type Message, type SequencedMessage } from './messages.js';
import { ReliableChannel, type ReliableChannelOptions, type TakeoverEvent } from './reliable-channel.js';

const quiet: ReliableChannelOptions = { pingIntervalMs: 0, heartbeatTimeoutMs: 0 };
const SESSION = { sessionId: 's1', resumeSecret: 'secret-1' };

function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Waits, without timers, until `done()` holds; fails after many event-loop turns. */
async function until(done: () => boolean, turns = 10_000): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (done()) return;
    await tick();
  }
  throw new Error('condition not reached');
}

function collect(channel: ReliableChannel): SequencedMessage[] {
  const out: SequencedMessage[] = [];
  channel.onMessage((m) => {
    out.push(m);
  });
  return out;
}

/** A one-session server that swaps its channel on takeover, as an agent must. */
class Server {
  channel = new ReliableChannel(quiet);
  readonly takeovers: TakeoverEvent[] = [];
  /** What the server's consumer received, per epoch. */
  readonly received = new Map<number, SequencedMessage[]>();
  authenticate: ServerHandshakeOptions['authenticate'];

  constructor() {
    this.#bind(this.channel);
  }

  #bind(channel: ReliableChannel): void {
    const got: SequencedMessage[] = [];
    this.received.set(channel.epoch, got);
    channel.onMessage((m) => {
      got.push(m);
    });
    channel.onTakeover((event) => {
      this.takeovers.push(event);
      this.channel = event.channel;
      this.#bind(event.channel);
    });
  }

  handshake(link: TransportSide) {
    return serverHandshake(link, {
      ...(this.authenticate ? { authenticate: this.authenticate } : {}),
      open: () => ({ ...SESSION, channel: this.channel }),
      resume: (request) => {
        if (request.sessionId !== SESSION.sessionId || request.resumeSecret !== SESSION.resumeSecret) {
          throw new RjobError('ERR_SESSION_NOT_FOUND', 'No such session.');
        }
        return this.channel;
      },
    });
  }
}

type TransportSide = MemoryLink['b'];

async function connect(
  server: Server,
  client: ReliableChannel,
  resume?: { takeover?: boolean },
): Promise<MemoryLink> {
  const link = createMemoryLink();
  await Promise.all([
    server.handshake(link.b),
    clientHandshake(link.a, { channel: client, ...(resume ? { resume: { ...SESSION, ...resume } } : {}) }),
  ]);
  return link;
}

/** Handshake messages the client side of `link` sends, decoded. */
function sniff(link: MemoryLink): Message[] {
  const sent: Message[] = [];
  const send = link.a.send.bind(link.a);
  link.a.send = (frame: Uint8Array) => {
    sent.push(decodeMessage(frame));
    return send(frame);
  };
  return sent;
}

/**
 * A session that has carried traffic both ways: the old client sent 3 requests (consumed), the
 * server sent 5 events (acknowledged) and 2 more that the old client never acknowledged.
 */
async function busySession(): Promise<{ server: Server; old: ReliableChannel; oldLink: MemoryLink }> {
  const server = new Server();
  const old = new ReliableChannel(quiet);
  const oldLink = await connect(server, old);
  const atOld = collect(old);
  for (let i = 0; i < 3; i++) old.send({ type: 'request', id: i, method: 'm' });
  for (let i = 0; i < 5; i++) server.channel.send({ type: 'event', name: 'e', data: i });
  await until(() => server.received.get(0)!.length === 3 && atOld.length === 5);
  await until(() => server.channel.ackedSeq === 5 && old.ackedSeq === 3);
  // The old client stops consuming (its process is about to die): these stay unacknowledged.
  old.onMessage(() => new Promise<void>(() => {}));
  server.channel.send({ type: 'event', name: 'e', data: 5 });
  server.channel.send({ type: 'event', name: 'e', data: 6 });
  await until(() => server.channel.stats().inFlightMessages === 2);
  return { server, old, oldLink };
}

function counters(channel: ReliableChannel) {
  return {
    state: channel.state,
    epoch: channel.epoch,
    sentSeq: channel.sentSeq,
    ackedSeq: channel.ackedSeq,
    receivedSeq: channel.receivedSeq,
    consumedSeq: channel.consumedSeq,
  };
}

describe('session takeover', () => {
  it('a brand-new client takes over a channel that carried messages; both directions number from 1', async () => {
    const { server, oldLink } = await busySession();
    const previous = server.channel;
    const oldClosed = new Promise<RjobError>((resolve) => previous.onClose(resolve));
    oldLink.cut(); // The old client's process is SIGKILLed; the server has not noticed yet.

    const fresh = new ReliableChannel(quiet);
    const link = createMemoryLink();
    const sent = sniff(link);
    const [s, c] = await Promise.all([
      server.handshake(link.b),
      clientHandshake(link.a, { channel: fresh, resume: { ...SESSION, takeover: true } }),
    ]);
    expect(sent.find((m) => m.type === 'resume')).toEqual({
      type: 'resume',
      ...SESSION,
      lastSeq: 0,
      takeover: true,
    });
    expect(c).toMatchObject({ sessionId: 's1', resumed: true });
    expect(s).toMatchObject({ sessionId: 's1', resumed: true, takenOver: true });
    expect(s.channel).toBe(server.channel);
    expect(server.channel).not.toBe(previous);

    // The hook saw what was abandoned, while the old channel was still readable.
    expect(server.takeovers).toHaveLength(1);
    expect(server.takeovers[0]).toMatchObject({
      epoch: 1,
      ackedSeq: 5,
      discardedOutbound: 2,
      discardedInbound: 0,
    });
    expect((await oldClosed).code).toBe('ERR_SESSION_TAKEN_OVER');
    expect(previous.state).toBe('closed');
    expect(() => previous.send({ type: 'event', name: 'late' })).toThrow(
      expect.objectContaining({ code: 'ERR_CHANNEL_CLOSED' }),
    );
    await expect(previous.drain()).rejects.toMatchObject({ code: 'ERR_CHANNEL_CLOSED' });

    // Epoch 1 on both sides, counters at 0, and traffic both ways numbered from 1.
    expect(fresh.epoch).toBe(1);
    expect(server.channel.epoch).toBe(1);
    const atFresh = collect(fresh);
    fresh.send({ type: 'request', id: 1, method: 'session.list' });
    fresh.send({ type: 'request', id: 2, method: 'job.get' });
    server.channel.send({ type: 'response', id: 1, result: 'a' });
    await until(() => server.received.get(1)!.length === 2 && atFresh.length === 1);
    expect(server.received.get(1)!.map((m) => m.seq)).toEqual([1, 2]);
    expect(atFresh).toEqual([{ type: 'response', seq: 1, id: 1, result: 'a' }]);
    await until(() => server.channel.ackedSeq === 1 && fresh.ackedSeq === 2);
    expect(server.channel.stats().inFlightMessages).toBe(0);
    expect(fresh.stats().inFlightMessages).toBe(0);
    // The old client's leftovers were not replayed to the new one.
    expect(atFresh.some((m) => m.type === 'event')).toBe(false);
  });

  it('a wrong secret is refused with ERR_SESSION_NOT_FOUND and leaves the old link and state alone', async () => {
    const { server, old } = await busySession();
    const before = counters(server.channel);
    const previous = server.channel;
    const link = createMemoryLink();
    const [s, c] = await Promise.allSettled([
      server.handshake(link.b),
      clientHandshake(link.a, {
        channel: new ReliableChannel(quiet),
        resume: { sessionId: 's1', resumeSecret: 'guess', takeover: true },
      }),
    ]);
    expect(s).toMatchObject({ status: 'rejected', reason: { code: 'ERR_SESSION_NOT_FOUND' } });
    expect(c).toMatchObject({ status: 'rejected', reason: { code: 'ERR_SESSION_NOT_FOUND' } });
    expect(server.takeovers).toEqual([]);
    expect(server.channel).toBe(previous);
    expect(counters(server.channel)).toEqual(before);
    expect(server.channel.state).toBe('attached');

    // The old link still carries traffic, in the old numbering.
    old.send({ type: 'request', id: 9, method: 'still' });
    await until(() => server.received.get(0)!.length === 4);
    expect(server.received.get(0)![3]).toMatchObject({ seq: 4, id: 9 });
  });

  it('an identity the server refuses is ERR_UNAUTHORIZED and takes nothing over', async () => {
    const { server } = await busySession();
    const before = counters(server.channel);
    server.authenticate = () => {
      throw new Error('nope');
    };
    const link = createMemoryLink();
    const [s, c] = await Promise.allSettled([
      server.handshake(link.b),
      clientHandshake(link.a, {
        channel: new ReliableChannel(quiet),
        resume: { ...SESSION, takeover: true },
      }),
    ]);
    expect(s).toMatchObject({ status: 'rejected', reason: { code: 'ERR_UNAUTHORIZED' } });
    expect(c).toMatchObject({ status: 'rejected', reason: { code: 'ERR_UNAUTHORIZED' } });
    expect(server.takeovers).toEqual([]);
    expect(counters(server.channel)).toEqual(before);
  });

  it('closes a still-attached old link, and the old client, with ERR_SESSION_TAKEN_OVER', async () => {
    const { server, old, oldLink } = await busySession();
    const oldClientClosed = new Promise<RjobError>((resolve) => old.onClose(resolve));
    expect(old.state).toBe('attached');
    await connect(server, new ReliableChannel(quiet), { takeover: true });
    const reason = await oldClientClosed;
    expect(RjobError.is(reason)).toBe(true);
    expect(reason.code).toBe('ERR_SESSION_TAKEN_OVER');
    expect(old.state).toBe('closed');
    expect(oldLink.closed).toBe(true);
  });

  it("refuses the old client's later plain resume with ERR_SESSION_TAKEN_OVER, leaving the new client alone", async () => {
    const { server, old, oldLink } = await busySession();
    oldLink.cut(); // A partition: the old client lives on, detached, and will try to resume.
    expect(old.state).toBe('detached');
    const fresh = new ReliableChannel(quiet);
    const freshLink = await connect(server, fresh, { takeover: true });
    const current = server.channel;
    const before = counters(current);

    const link = createMemoryLink();
    const [s, c] = await Promise.allSettled([
      server.handshake(link.b),
      clientHandshake(link.a, { channel: old, resume: SESSION }),
    ]);
    expect(s).toMatchObject({ status: 'rejected', reason: { code: 'ERR_SESSION_TAKEN_OVER' } });
    expect(c).toMatchObject({ status: 'rejected', reason: { code: 'ERR_SESSION_TAKEN_OVER' } });
    expect(server.channel).toBe(current);
    expect(counters(current)).toEqual(before);
    expect(freshLink.closed).toBe(false);
    const atFresh = collect(fresh);
    current.send({ type: 'event', name: 'still yours' });
    await until(() => atFresh.length === 1);
    expect(atFresh[0]).toMatchObject({ seq: 1, name: 'still yours' });
  });

  it('after a takeover, a plain resume replays exactly (epoch carried)', async () => {
    const { server, oldLink } = await busySession();
    oldLink.cut();
    const fresh = new ReliableChannel(quiet);
    const atFresh = collect(fresh);
    const first = await connect(server, fresh, { takeover: true });
    for (let i = 0; i < 10; i++) server.channel.send({ type: 'event', name: 'n', data: i });
    fresh.send({ type: 'request', id: 1, method: 'a' });
    await until(() => atFresh.length >= 3);
    first.cut();
    for (let i = 10; i < 20; i++) server.channel.send({ type: 'event', name: 'n', data: i });
    fresh.send({ type: 'request', id: 2, method: 'b' });

    const link = createMemoryLink();
    const sent = sniff(link);
    await Promise.all([
      server.handshake(link.b),
      clientHandshake(link.a, { channel: fresh, resume: SESSION }),
    ]);
    expect(sent.find((m) => m.type === 'resume')).toMatchObject({ epoch: 1 });
    expect(sent.find((m) => m.type === 'resume')).not.toHaveProperty('takeover');
    await until(() => atFresh.length === 20 && server.received.get(1)!.length === 2);
    expect(atFresh.map((m) => [m.seq, (m as { data: number }).data])).toEqual(
      Array.from({ length: 20 }, (_, i) => [i + 1, i]),
    );
    expect(server.received.get(1)!.map((m) => [m.seq, (m as { id: number }).id])).toEqual([
      [1, 1],
      [2, 2],
    ]);
    expect(server.takeovers).toHaveLength(1);
  });

  it('a plain resume of a session never taken over sends no new fields and replays exactly', async () => {
    const server = new Server();
    const client = new ReliableChannel(quiet);
    const atClient = collect(client);
    const first = await connect(server, client);
    server.channel.send({ type: 'event', name: 'n', data: 0 });
    await until(() => atClient.length === 1);
    first.cut();
    server.channel.send({ type: 'event', name: 'n', data: 1 });
    const link = createMemoryLink();
    const sent = sniff(link);
    await Promise.all([
      server.handshake(link.b),
      clientHandshake(link.a, { channel: client, resume: SESSION }),
    ]);
    expect(sent.find((m) => m.type === 'resume')).toEqual({ type: 'resume', ...SESSION, lastSeq: 1 });
    await until(() => atClient.length === 2);
    expect(atClient.map((m) => m.seq)).toEqual([1, 2]);
    expect(client.epoch).toBe(0);
  });

  it('a takeover needs a channel that was never attached', async () => {
    const { server, old, oldLink } = await busySession();
    oldLink.cut();
    const link = createMemoryLink();
    const sent = sniff(link);
    await expect(
      clientHandshake(link.a, { channel: old, resume: { ...SESSION, takeover: true } }),
    ).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    expect(sent).toEqual([]);
    expect(server.takeovers).toEqual([]);
  });

  it('a client refuses a server that answers a takeover without starting an epoch', async () => {
    // A hand-written peer that ignores `takeover` and resumes as if the client held nothing.
    const link = createMemoryLink();
    link.b.onMessage((frame) => {
      const message = decodeMessage(frame);
      if (message.type === 'hello') link.b.send(encodeMessage({ type: 'welcome', version: 1 }));
      if (message.type === 'resume')
        link.b.send(encodeMessage({ type: 'resumed', sessionId: 's1', lastSeq: 0 }));
    });
    const fresh = new ReliableChannel(quiet);
    await expect(
      clientHandshake(link.a, { channel: fresh, resume: { ...SESSION, takeover: true } }),
    ).rejects.toMatchObject({ code: 'ERR_PROTOCOL_VIOLATION' });
    expect(fresh.pristine).toBe(true);
  });
});

describe('acknowledgement hooks', () => {
  it('onAck reports each advance and whenAcked resolves once the peer consumed the message', async () => {
    const server = new Server();
    const client = new ReliableChannel(quiet);
    await connect(server, client);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let first = true;
    client.onMessage(async () => {
      if (first) {
        first = false;
        await gate;
      }
    });
    const acks: number[] = [];
    server.channel.onAck((seq) => acks.push(seq));
    server.channel.send({ type: 'event', name: 'a' });
    const seqA = server.channel.sentSeq;
    server.channel.send({ type: 'event', name: 'b' });
    const seqB = server.channel.sentSeq;
    let ackedB = false;
    const whenB = server.channel.whenAcked(seqB).then(() => {
      ackedB = true;
    });
    for (let i = 0; i < 20; i++) await tick();
    expect(ackedB).toBe(false);
    expect(acks).toEqual([]);
    release();
    await whenB;
    await server.channel.whenAcked(seqA);
    expect(acks.at(-1)).toBe(seqB);
    expect(acks).toEqual([...acks].sort((x, y) => x - y));
    await expect(server.channel.whenAcked(99)).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
  });

  it('whenAcked of a message the old client never acknowledged rejects on takeover', async () => {
    const { server, oldLink } = await busySession();
    const previous = server.channel;
    const pending = previous.whenAcked(previous.sentSeq);
    pending.catch(() => {});
    oldLink.cut();
    await connect(server, new ReliableChannel(quiet), { takeover: true });
    await expect(pending).rejects.toMatchObject({ code: 'ERR_SESSION_TAKEN_OVER' });
  });
});
