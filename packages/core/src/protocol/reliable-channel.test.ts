import { afterEach, describe, expect, it, vi } from 'vitest';
import { RjobError } from '../errors.js';
import { createMemoryLink, type MemoryLink } from '../testing/memory-transport.js';
import { clientHandshake, serverHandshake } from './handshake.js';
import { decodeMessage, encodeMessage, type SequencedMessage } from './messages.js';
import { ReliableChannel, type ReliableChannelOptions } from './reliable-channel.js';

const quiet: ReliableChannelOptions = { pingIntervalMs: 0, heartbeatTimeoutMs: 0 };

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

function pair(options: ReliableChannelOptions = quiet): {
  a: ReliableChannel;
  b: ReliableChannel;
  link: MemoryLink;
} {
  const link = createMemoryLink();
  const a = new ReliableChannel(options);
  const b = new ReliableChannel(options);
  a.attach(link.a, 0);
  b.attach(link.b, 0);
  return { a, b, link };
}

function collect(channel: ReliableChannel): SequencedMessage[] {
  const out: SequencedMessage[] = [];
  channel.onMessage((m) => {
    out.push(m);
  });
  return out;
}

afterEach(() => {
  vi.useRealTimers();
});

describe('ReliableChannel', () => {
  it('carries requests, responses and events both ways, numbered from 1', async () => {
    const { a, b } = pair();
    const atA = collect(a);
    const atB = collect(b);
    a.send({ type: 'request', id: 1, method: 'job.get', params: { id: 3 } });
    a.send({ type: 'event', name: 'job.state', data: { state: 'Running', at: new Date(5) } });
    b.send({ type: 'response', id: 1, result: [1n, new Map([[1, 2]])] });
    await until(() => atA.length === 1 && atB.length === 2);
    expect(atB).toEqual([
      { type: 'request', seq: 1, id: 1, method: 'job.get', params: { id: 3 } },
      { type: 'event', seq: 2, name: 'job.state', data: { state: 'Running', at: new Date(5) } },
    ]);
    expect(atA).toEqual([{ type: 'response', seq: 1, id: 1, result: [1n, new Map([[1, 2]])] }]);
    await until(() => a.ackedSeq === 2 && b.ackedSeq === 1);
    expect(a.stats().inFlightMessages).toBe(0);
  });

  it('throws ERR_FRAME_TOO_LARGE for a message over the limit and stays usable', async () => {
    const { a, b } = pair({ ...quiet, maxFrameBytes: 1024 });
    const atB = collect(b);
    expect(() => a.send({ type: 'event', name: 'x', data: 'y'.repeat(2000) })).toThrow(
      expect.objectContaining({ code: 'ERR_FRAME_TOO_LARGE' }),
    );
    a.send({ type: 'event', name: 'x', data: 1 });
    await until(() => atB.length === 1);
    expect(atB[0]).toMatchObject({ seq: 1, data: 1 });
  });

  it('queues while detached and replays after attach', async () => {
    const { a, b, link } = pair();
    const atB = collect(b);
    a.send({ type: 'event', name: 'n', data: 1 });
    link.cut();
    expect(a.state).toBe('detached');
    a.send({ type: 'event', name: 'n', data: 2 });
    const next = createMemoryLink();
    b.attach(next.b, a.ackedSeq === 1 ? 1 : a.ackedSeq);
    a.attach(next.a, b.receivedSeq);
    await until(() => atB.length === 2);
    expect(atB.map((m) => (m as { data: number }).data)).toEqual([1, 2]);
  });

  it('closes both ends with ERR_CHANNEL_CLOSED on close, and fails later sends', async () => {
    const { a, b } = pair();
    const closedB = new Promise<RjobError>((resolve) => b.onClose(resolve));
    a.close('done');
    expect((await closedB).code).toBe('ERR_CHANNEL_CLOSED');
    expect(a.state).toBe('closed');
    expect(() => a.send({ type: 'event', name: 'x' })).toThrow(
      expect.objectContaining({ code: 'ERR_CHANNEL_CLOSED' }),
    );
  });

  it('a handler that throws closes the channel with a coded error, never uncaught', async () => {
    const { a, b } = pair();
    const closed = new Promise<RjobError>((resolve) => b.onClose(resolve));
    b.onMessage(() => {
      throw new Error('consumer bug');
    });
    a.send({ type: 'event', name: 'x' });
    const reason = await closed;
    expect(RjobError.is(reason)).toBe(true);
    expect(reason.message).toMatch(/consumer bug/);
  });

  it('rejects a resume from a point it can no longer replay', () => {
    const a = new ReliableChannel(quiet);
    const link = createMemoryLink();
    expect(() => a.attach(link.a, 5)).toThrow(expect.objectContaining({ code: 'ERR_RESUME_FAILED' }));
    expect(a.state).toBe('closed');
  });

  describe('protocol violations close only that channel', () => {
    function victim(): { b: ReliableChannel; a: ReliableChannel; link: MemoryLink; reason: () => RjobError } {
      const { a, b, link } = pair();
      return { a, b, link, reason: () => b.closeReason! };
    }

    it('a gap in sequence numbers is ERR_SEQUENCE', () => {
      const { link, reason } = victim();
      link.inject('b', encodeMessage({ type: 'event', seq: 2, name: 'x' }));
      expect(reason().code).toBe('ERR_SEQUENCE');
    });

    it('a repeated sequence number is ERR_SEQUENCE', () => {
      const { link, reason } = victim();
      link.inject('b', encodeMessage({ type: 'event', seq: 1, name: 'x' }));
      link.inject('b', encodeMessage({ type: 'event', seq: 1, name: 'x' }));
      expect(reason().code).toBe('ERR_SEQUENCE');
    });

    it('sending past the credit is ERR_FLOW_CONTROL', () => {
      const link = createMemoryLink();
      const b = new ReliableChannel({ ...quiet, windowMessages: 2 });
      b.attach(link.b, 0);
      for (let seq = 1; seq <= 3; seq++) link.inject('b', encodeMessage({ type: 'event', seq, name: 'x' }));
      expect(b.closeReason?.code).toBe('ERR_FLOW_CONTROL');
    });

    it('acking a message never sent is ERR_SEQUENCE', () => {
      const { link, reason } = victim();
      link.inject('b', encodeMessage({ type: 'ack', seq: 1 }));
      expect(reason().code).toBe('ERR_SEQUENCE');
    });

    it('a handshake message after the handshake is ERR_PROTOCOL_VIOLATION', () => {
      const { link, reason } = victim();
      link.inject('b', encodeMessage({ type: 'hello', versions: [1] }));
      expect(reason().code).toBe('ERR_PROTOCOL_VIOLATION');
    });

    it('garbage is ERR_MESSAGE_INVALID, and the peer learns the code', async () => {
      const { a, link, reason } = victim();
      const peerClosed = new Promise<RjobError>((resolve) => a.onClose(resolve));
      link.inject('b', new Uint8Array([0xff, 0x0f, 0x99]));
      expect(reason().code).toBe('ERR_MESSAGE_INVALID');
      expect((await peerClosed).code).toBe('ERR_MESSAGE_INVALID');
      // Another channel is untouched.
      const other = pair();
      const got = collect(other.b);
      other.a.send({ type: 'event', name: 'still', data: 1 });
      await until(() => got.length === 1);
    });
  });

  describe('heartbeats', () => {
    it('a stalled link is detected and dropped with ERR_HEARTBEAT_TIMEOUT', async () => {
      vi.useFakeTimers();
      const { a, b, link } = pair({ pingIntervalMs: 1000, heartbeatTimeoutMs: 5000 });
      const reasons: string[] = [];
      a.onDisconnect((r) => reasons.push(`a:${r.code}`));
      b.onDisconnect((r) => reasons.push(`b:${r.code}`));
      // A healthy link stays up through many timeout periods because pings keep arriving.
      await vi.advanceTimersByTimeAsync(60_000);
      expect(reasons).toEqual([]);
      expect(a.state).toBe('attached');
      link.stall();
      await vi.advanceTimersByTimeAsync(4000);
      expect(reasons).toEqual([]);
      await vi.advanceTimersByTimeAsync(2000);
      // Whichever side times out first closes the link, so the other may see the close first.
      expect(reasons.map((r) => r[0]).sort()).toEqual(['a', 'b']);
      expect(reasons.some((r) => r.endsWith(':ERR_HEARTBEAT_TIMEOUT'))).toBe(true);
      expect(reasons.every((r) => /:ERR_(HEARTBEAT_TIMEOUT|LINK_CLOSED)$/.test(r))).toBe(true);
      expect(a.state).toBe('detached');
      expect(b.state).toBe('detached');
      expect(link.closed).toBe(true);
    });
  });

  describe('credit flow control', () => {
    it('keeps the receive buffer bounded when the consumer is slow', async () => {
      const windowMessages = 32;
      const windowBytes = 8 * 1024;
      const options = { ...quiet, windowMessages, windowBytes, highWaterMarkBytes: 4 * 1024 };
      const { a, b } = pair(options);
      const total = 3000;
      const seen: number[] = [];
      let largest = 0;
      b.onMessage(async (m) => {
        seen.push((m as { data: { n: number } }).data.n);
        // A slow consumer: every message waits a full event-loop turn.
        await tick();
      });
      let maxPending = 0;
      for (let n = 0; n < total; n++) {
        const data = { n, text: 'x'.repeat(n % 500) };
        largest = Math.max(largest, encodeMessage({ type: 'event', seq: n + 1, name: 'n', data }).byteLength);
        if (!a.send({ type: 'event', name: 'n', data })) await a.drain();
        maxPending = Math.max(maxPending, a.stats().pendingBytes);
      }
      await until(() => seen.length === total, 100_000);
      expect(seen).toEqual(Array.from({ length: total }, (_, i) => i));
      const stats = b.stats();
      expect(stats.maxInboundMessages).toBeLessThanOrEqual(windowMessages);
      expect(stats.maxInboundBytes).toBeLessThan(windowBytes + largest);
      expect(stats.maxInboundMessages).toBeGreaterThan(1);
      // The producer honoured backpressure, so its own queue stayed bounded too.
      expect(maxPending).toBeLessThan(4 * 1024 + largest);
    });

    it('never keeps more than maxReplayBytes in flight', async () => {
      const { a, b } = pair({ ...quiet, maxReplayBytes: 2000, windowBytes: 1 << 20 });
      let maxInFlight = 0;
      const got: SequencedMessage[] = [];
      b.onMessage(async (m) => {
        got.push(m);
        maxInFlight = Math.max(maxInFlight, a.stats().inFlightBytes);
        await tick();
      });
      for (let i = 0; i < 200; i++) a.send({ type: 'event', name: 'x', data: 'y'.repeat(100) });
      await until(() => got.length === 200);
      expect(maxInFlight).toBeLessThanOrEqual(2000);
    });
  });
});

describe('handshake', () => {
  function serverFor(channel: ReliableChannel, secret = 'secret') {
    return {
      open: () => ({ sessionId: 's1', resumeSecret: secret, channel }),
      resume: (request: { sessionId: string; resumeSecret: string }) => {
        if (request.sessionId !== 's1' || request.resumeSecret !== secret) {
          throw new RjobError('ERR_SESSION_NOT_FOUND', 'No such session.');
        }
        return channel;
      },
    };
  }

  it('opens a session and attaches both channels', async () => {
    const link = createMemoryLink();
    const server = new ReliableChannel(quiet);
    const client = new ReliableChannel(quiet);
    const [s, c] = await Promise.all([
      serverHandshake(link.b, { ...serverFor(server), authenticate: (t) => expect(t).toBe('tok') }),
      clientHandshake(link.a, { channel: client, token: 'tok' }),
    ]);
    expect(c).toEqual({ version: 1, sessionId: 's1', resumeSecret: 'secret', resumed: false });
    expect(s).toMatchObject({ version: 1, sessionId: 's1', token: 'tok', resumed: false });
    expect(client.state).toBe('attached');
    const got = collect(client);
    server.send({ type: 'event', name: 'hi' });
    await until(() => got.length === 1);
  });

  it('refuses a client with no common version with ERR_PROTOCOL_VERSION', async () => {
    const link = createMemoryLink();
    const server = serverHandshake(link.b, serverFor(new ReliableChannel(quiet)));
    const client = clientHandshake(link.a, { channel: new ReliableChannel(quiet), versions: [7] });
    await expect(server).rejects.toMatchObject({ code: 'ERR_PROTOCOL_VERSION' });
    await expect(client).rejects.toMatchObject({ code: 'ERR_PROTOCOL_VERSION' });
  });

  it('refuses a wrong resume secret with ERR_SESSION_NOT_FOUND', async () => {
    const link = createMemoryLink();
    const server = serverHandshake(link.b, serverFor(new ReliableChannel(quiet)));
    const client = clientHandshake(link.a, {
      channel: new ReliableChannel(quiet),
      resume: { sessionId: 's1', resumeSecret: 'guess' },
    });
    await expect(server).rejects.toMatchObject({ code: 'ERR_SESSION_NOT_FOUND' });
    await expect(client).rejects.toMatchObject({ code: 'ERR_SESSION_NOT_FOUND' });
  });

  it('refuses an identity the server rejects with ERR_UNAUTHORIZED', async () => {
    const link = createMemoryLink();
    const server = serverHandshake(link.b, {
      ...serverFor(new ReliableChannel(quiet)),
      authenticate: () => {
        throw new Error('nope');
      },
    });
    const client = clientHandshake(link.a, { channel: new ReliableChannel(quiet), token: 'bad' });
    await expect(server).rejects.toMatchObject({ code: 'ERR_UNAUTHORIZED' });
    await expect(client).rejects.toMatchObject({ code: 'ERR_UNAUTHORIZED' });
  });

  it('times out a silent peer with ERR_HANDSHAKE_TIMEOUT', async () => {
    vi.useFakeTimers();
    const link = createMemoryLink();
    const client = clientHandshake(link.a, { channel: new ReliableChannel(quiet), handshakeTimeoutMs: 2000 });
    const outcome = client.catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(2000);
    expect(await outcome).toMatchObject({ code: 'ERR_HANDSHAKE_TIMEOUT' });
    expect(link.closed).toBe(true);
  });

  it('sends open right after hello, and attaches when welcome, opened, ack and credit come at once', async () => {
    const link = createMemoryLink();
    const seen: string[] = [];
    link.b.onMessage((frame) => {
      const message = decodeMessage(frame);
      seen.push(message.type);
      if (message.type !== 'open') return;
      // Both arrived before the server said anything: the client did not wait for `welcome`.
      expect(seen).toEqual(['hello', 'open']);
      for (const answer of [
        { type: 'welcome', version: 1 },
        { type: 'opened', sessionId: 's1', resumeSecret: 'secret' },
        { type: 'ack', seq: 0 },
        { type: 'credit', seq: 1024, bytes: 1 << 20 },
        { type: 'event', seq: 1, name: 'hi' },
      ] as const) {
        link.b.send(encodeMessage(answer));
      }
    });
    const client = new ReliableChannel(quiet);
    const result = await clientHandshake(link.a, { channel: client });
    expect(result).toEqual({ version: 1, sessionId: 's1', resumeSecret: 'secret', resumed: false });
    const got = collect(client);
    await until(() => got.length === 1);
    expect(got[0]).toMatchObject({ type: 'event', name: 'hi' });
    expect(client.state).toBe('attached');
  });

  it('rejects a message out of turn with ERR_PROTOCOL_VIOLATION', async () => {
    const link = createMemoryLink();
    const server = serverHandshake(link.b, serverFor(new ReliableChannel(quiet)));
    link.a.send(encodeMessage({ type: 'open' }));
    await expect(server).rejects.toMatchObject({ code: 'ERR_PROTOCOL_VIOLATION' });
  });
});
