import { describe, expect, it, vi } from 'vitest';
import type { RjobError } from '../errors.js';
import { createMemoryLink, createMemoryNetwork } from './memory-transport.js';
import { runTransportConformance } from './transport-conformance.js';

runTransportConformance(
  ({ maxFrameBytes }) => {
    const link = createMemoryLink({ maxFrameBytes });
    return { client: link.a, server: link.b };
  },
  { name: 'memory link conformance', test: { describe, it } },
);

runTransportConformance(
  async ({ maxFrameBytes }) => {
    const network = createMemoryNetwork({ maxFrameBytes });
    let server: ReturnType<typeof createMemoryLink>['b'] | undefined;
    network.listen('agent', (channel) => {
      server = channel;
    });
    const client = await network.transport.connect('agent', { maxFrameBytes });
    return { client, server: server! };
  },
  { name: 'memory network conformance', test: { describe, it } },
);

function received(channel: ReturnType<typeof createMemoryLink>['a']): number[] {
  const out: number[] = [];
  channel.onMessage((frame) => out.push(frame[0]!));
  return out;
}

describe('memory link controls', () => {
  it('cut loses frames in flight and closes both sides with ERR_LINK_CLOSED', async () => {
    const link = createMemoryLink();
    const got = received(link.b);
    const reasons: RjobError[] = [];
    link.a.onClose((r) => reasons.push(r));
    link.b.onClose((r) => reasons.push(r));
    link.a.send(new Uint8Array([1]));
    link.cut();
    await Promise.resolve();
    expect(got).toEqual([]);
    expect(reasons.map((r) => r.code)).toEqual(['ERR_LINK_CLOSED', 'ERR_LINK_CLOSED']);
    expect(link.closed).toBe(true);
    expect(link.a.send(new Uint8Array([2]))).toBe(false);
  });

  it('stall queues frames and pushes back; unstall delivers them in order', async () => {
    const link = createMemoryLink({ highWaterMarkBytes: 10 });
    const got = received(link.b);
    link.stall();
    expect(link.a.send(new Uint8Array([1, 0, 0, 0, 0]))).toBe(true);
    expect(link.a.send(new Uint8Array([2, 0, 0, 0, 0]))).toBe(false);
    let drained = 0;
    link.a.onDrain!(() => drained++);
    await new Promise<void>((resolve) => setImmediate(resolve));
    expect(got).toEqual([]);
    expect(link.queued('b')).toEqual({ frames: 2, bytes: 10 });
    link.unstall();
    await Promise.resolve();
    await Promise.resolve();
    expect(got).toEqual([1, 2]);
    expect(drained).toBe(1);
  });

  it('delays delivery under fake timers', async () => {
    vi.useFakeTimers();
    try {
      const link = createMemoryLink({ delayMs: 100 });
      const got = received(link.b);
      link.a.send(new Uint8Array([1]));
      link.a.send(new Uint8Array([2]));
      await vi.advanceTimersByTimeAsync(99);
      expect(got).toEqual([]);
      await vi.advanceTimersByTimeAsync(1);
      expect(got).toEqual([1, 2]);
      link.setDelay(0);
      link.a.send(new Uint8Array([3]));
      await vi.advanceTimersByTimeAsync(0);
      expect(got).toEqual([1, 2, 3]);
    } finally {
      vi.useRealTimers();
    }
  });

  it('inject delivers raw frames to one side', () => {
    const link = createMemoryLink();
    const got = received(link.a);
    link.inject('a', new Uint8Array([9]));
    expect(got).toEqual([9]);
  });

  it('network refuses unknown addresses and double listens', async () => {
    const network = createMemoryNetwork();
    await expect(network.transport.connect('nowhere')).rejects.toMatchObject({ code: 'ERR_LINK_CLOSED' });
    const stop = network.listen('x', () => {});
    expect(() => network.listen('x', () => {})).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
    stop();
    network.listen('x', () => {});
    await network.transport.connect('x');
    expect(network.links).toHaveLength(1);
  });
});
