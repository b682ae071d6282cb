/**
 * The conformance suite every transport runs. Call it at the top level of a test file:
 *
 * ```ts
 * runTransportConformance(async ({ maxFrameBytes }) => {
 *   const [client, server] = await connectMyTransport({ maxFrameBytes });
 *   return { client, server, dispose: () => shutdown() };
 * });
 * ```
 *
 * It checks the contract of {@link TransportChannel}; it never asserts timings.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { RjobError } from '../errors.js';
import type { TransportChannel } from '../transport/transport.js';

export interface TransportPair {
  /** The end that connected. */
  client: TransportChannel;
  /** The end that accepted. */
  server: TransportChannel;
  /** Frees whatever the pair holds (servers, sockets, temp dirs). */
  dispose?(): void | Promise<void>;
}

export interface TransportConformanceOptions {
  /** Suite title. Default `transport conformance`. */
  name?: string;
  /**
   * Frame limit asked of the pair; the large-frame tests send frames of exactly this size.
   * Default 1 MiB (the protocol default of 16 MiB works too, only slower).
   */
  maxFrameBytes?: number;
  /** Frames in the ordering test. Default 2000. */
  orderingFrames?: number;
}

export type MakeTransportPair = (options: {
  maxFrameBytes: number;
}) => TransportPair | Promise<TransportPair>;

/** Collects frames from a channel and lets a test wait for a count, without timers. */
class Inbox {
  readonly frames: Uint8Array[] = [];
  #waiters: { count: number; resolve: () => void }[] = [];

  constructor(channel: TransportChannel) {
    channel.onMessage((frame) => {
      this.frames.push(frame);
      this.#waiters = this.#waiters.filter((w) => {
        if (this.frames.length < w.count) return true;
        w.resolve();
        return false;
      });
    });
  }

  waitFor(count: number): Promise<void> {
    if (this.frames.length >= count) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ count, resolve }));
  }
}

function closed(channel: TransportChannel): Promise<RjobError> {
  return new Promise((resolve) => channel.onClose(resolve));
}

function numbered(n: number, size: number): Uint8Array {
  const frame = new Uint8Array(Math.max(4, size));
  new DataView(frame.buffer).setUint32(0, n);
  for (let i = 4; i < frame.length; i++) frame[i] = (n + i) & 0xff;
  return frame;
}

function numberOf(frame: Uint8Array): number {
  return new DataView(frame.buffer, frame.byteOffset, frame.byteLength).getUint32(0);
}

/** Registers the transport conformance tests with vitest. */
export function runTransportConformance(
  makePair: MakeTransportPair,
  options: TransportConformanceOptions = {},
): void {
  const maxFrameBytes = options.maxFrameBytes ?? 1024 * 1024;
  const orderingFrames = options.orderingFrames ?? 2000;

  describe(options.name ?? 'transport conformance', () => {
    const pairs: TransportPair[] = [];
    const open = async (): Promise<TransportPair> => {
      const pair = await makePair({ maxFrameBytes });
      pairs.push(pair);
      return pair;
    };
    afterEach(async () => {
      for (const pair of pairs.splice(0)) {
        pair.client.close();
        pair.server.close();
        await pair.dispose?.();
      }
    });

    it('carries frames both ways, byte for byte', async () => {
      const { client, server } = await open();
      const atServer = new Inbox(server);
      const atClient = new Inbox(client);
      client.send(new Uint8Array([1, 2, 3]));
      await atServer.waitFor(1);
      expect([...atServer.frames[0]!]).toEqual([1, 2, 3]);
      server.send(new Uint8Array([0, 255, 7]));
      await atClient.waitFor(1);
      expect([...atClient.frames[0]!]).toEqual([0, 255, 7]);
    });

    it('keeps frame boundaries and order', async () => {
      const { client, server } = await open();
      const atServer = new Inbox(server);
      const atClient = new Inbox(client);
      for (let i = 0; i < orderingFrames; i++) {
        client.send(numbered(i, 4 + ((i * 37) % 300)));
        server.send(numbered(i, 4 + ((i * 11) % 200)));
      }
      await Promise.all([atServer.waitFor(orderingFrames), atClient.waitFor(orderingFrames)]);
      expect(atServer.frames.map(numberOf)).toEqual(Array.from({ length: orderingFrames }, (_, i) => i));
      expect(atClient.frames.map(numberOf)).toEqual(Array.from({ length: orderingFrames }, (_, i) => i));
      expect(atServer.frames.map((f) => f.byteLength)).toEqual(
        Array.from({ length: orderingFrames }, (_, i) => 4 + ((i * 37) % 300)),
      );
      const last = atServer.frames[orderingFrames - 1]!;
      expect(Buffer.from(last).equals(Buffer.from(numbered(orderingFrames - 1, last.byteLength)))).toBe(true);
    });

    it('carries frames of exactly the maximum size', async () => {
      const { client, server } = await open();
      const atServer = new Inbox(server);
      const atClient = new Inbox(client);
      const big = numbered(7, maxFrameBytes);
      client.send(big);
      server.send(big);
      await Promise.all([atServer.waitFor(1), atClient.waitFor(1)]);
      expect(atServer.frames[0]!.byteLength).toBe(maxFrameBytes);
      expect(Buffer.from(atServer.frames[0]!).equals(Buffer.from(big))).toBe(true);
      expect(Buffer.from(atClient.frames[0]!).equals(Buffer.from(big))).toBe(true);
    });

    it('refuses an oversized frame with ERR_FRAME_TOO_LARGE and stays usable', async () => {
      const { client, server } = await open();
      const atServer = new Inbox(server);
      let thrown: unknown;
      try {
        client.send(new Uint8Array(maxFrameBytes + 1));
      } catch (error) {
        thrown = error;
      }
      expect(RjobError.hasCode(thrown, 'ERR_FRAME_TOO_LARGE')).toBe(true);
      client.send(new Uint8Array([42]));
      await atServer.waitFor(1);
      expect([...atServer.frames[0]!]).toEqual([42]);
    });

    it('holds frames that arrive before a handler registers', async () => {
      const { client, server } = await open();
      client.send(numbered(1, 8));
      client.send(numbered(2, 8));
      // Give the frames every chance to arrive first; the assertion holds either way.
      for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => setImmediate(resolve));
      const atServer = new Inbox(server);
      await atServer.waitFor(2);
      expect(atServer.frames.map(numberOf)).toEqual([1, 2]);
    });

    it('propagates close to the peer, once, with a coded reason', async () => {
      const { client, server } = await open();
      const atServer = new Inbox(server);
      let clientCloses = 0;
      let serverCloses = 0;
      client.onClose(() => clientCloses++);
      server.onClose(() => serverCloses++);
      const serverClosed = closed(server);
      const clientClosed = closed(client);
      // Frames sent before close() are delivered before the peer sees the close.
      client.send(numbered(1, 16));
      client.send(numbered(2, 16));
      client.close();
      const reason = await serverClosed;
      expect(RjobError.is(reason)).toBe(true);
      expect(typeof reason.code).toBe('string');
      expect(RjobError.is(await clientClosed)).toBe(true);
      expect(atServer.frames.map(numberOf)).toEqual([1, 2]);
      // Sending after close neither throws nor delivers.
      expect(client.send(new Uint8Array([1]))).toBe(false);
      expect(server.send(new Uint8Array([1]))).toBe(false);
      client.close();
      server.close();
      // A late handler still learns about the close.
      expect(RjobError.is(await closed(client))).toBe(true);
      expect(clientCloses).toBe(1);
      expect(serverCloses).toBe(1);
    });

    it('propagates a close from the accepting side', async () => {
      const { client, server } = await open();
      const clientClosed = closed(client);
      server.close('bye');
      expect(RjobError.is(await clientClosed)).toBe(true);
    });

    it('signals backpressure and drains without losing frames', async () => {
      const { client, server } = await open();
      const frameBytes = Math.max(1024, Math.floor(maxFrameBytes / 4));
      // Enough to exceed any sane send buffer, so a real transport must push back.
      const total = Math.max(64, Math.ceil((32 * 1024 * 1024) / frameBytes));
      let congested = 0;
      let sent = 0;
      const sendAll = async (): Promise<void> => {
        while (sent < total) {
          const accepted = client.send(numbered(sent++, frameBytes));
          if (accepted === false) {
            congested++;
            expect(client.onDrain).toBeTypeOf('function');
            await new Promise<void>((resolve) => {
              const off = client.onDrain!(() => {
                off();
                resolve();
              });
            });
          }
        }
      };
      // The receiver only starts reading after the sender has been pushed back once (or is done).
      const sending = sendAll();
      await new Promise<void>((resolve) => setImmediate(resolve));
      const atServer = new Inbox(server);
      await sending;
      await atServer.waitFor(total);
      expect(atServer.frames.map(numberOf)).toEqual(Array.from({ length: total }, (_, i) => i));
      // Whether a transport pushes back at all depends on its buffers, so `congested` is not
      // asserted; what is asserted is that pushing back never loses or reorders frames.
      expect(congested).toBeGreaterThanOrEqual(0);
    });
  });
}
