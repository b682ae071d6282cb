/**
 * The conformance suite every transport runs. It works with any test runner that has `describe`
 * and `it` (vitest, jest, mocha, node:test): pass them in, at the top level of a test file:
 *
 * ```ts
 * import { describe, it } from 'vitest'; // or 'node:test', or jest's globals
 * runTransportConformance(async ({ maxFrameBytes }) => {
 *   const [client, server] = await connectMyTransport({ maxFrameBytes });
 *   return { client, server, dispose: () => shutdown() };
 * }, { test: { describe, it } });
 * ```
 *
 * `transportConformanceCases` gives the same checks as plain async functions, for anything else.
 * Assertions use `node:assert`; the suite never asserts timings.
 */
import assert from 'node:assert/strict';
import { ErrorCode, RjobError } from '../errors.js';
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
  /**
   * The test runner's `describe` and `it`. Default: the global ones (jest, mocha, vitest with
   * `globals: true`); without globals pass them, e.g. `{ describe, it }` from 'vitest' or 'node:test'.
   */
  test?: TestApi;
}

/** What the suite needs of a test runner; vitest's, jest's, mocha's and node:test's fit. */
export interface TestApi {
  describe(name: string, body: () => void): unknown;
  it(name: string, body: () => Promise<void>): unknown;
}

/** One conformance check: `run` resolves when it passes and rejects (an AssertionError) when not. */
export interface ConformanceCase {
  name: string;
  run(): Promise<void>;
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

/** Registers the transport conformance tests with the test runner's `describe` and `it`. */
export function runTransportConformance(
  makePair: MakeTransportPair,
  options: TransportConformanceOptions = {},
): void {
  const test = options.test ?? globalTestApi();
  test.describe(options.name ?? 'transport conformance', () => {
    for (const check of transportConformanceCases(makePair, options)) test.it(check.name, check.run);
  });
}

function globalTestApi(): TestApi {
  const g = globalThis as { describe?: TestApi['describe']; it?: TestApi['it'] };
  if (typeof g.describe !== 'function' || typeof g.it !== 'function') {
    throw new RjobError(
      ErrorCode.InvalidArgument,
      "runTransportConformance needs a test runner: pass { test: { describe, it } } (from 'vitest', 'node:test', ...).",
    );
  }
  return { describe: g.describe, it: g.it };
}

/**
 * The conformance checks as plain async functions. Each opens its own pair and closes and
 * disposes it when done, passed or not.
 */
export function transportConformanceCases(
  makePair: MakeTransportPair,
  options: Omit<TransportConformanceOptions, 'test' | 'name'> = {},
): ConformanceCase[] {
  const maxFrameBytes = options.maxFrameBytes ?? 1024 * 1024;
  const orderingFrames = options.orderingFrames ?? 2000;
  const cases: ConformanceCase[] = [];
  const it = (name: string, body: (pair: TransportPair) => Promise<void>): void => {
    cases.push({
      name,
      async run() {
        const pair = await makePair({ maxFrameBytes });
        try {
          await body(pair);
        } finally {
          pair.client.close();
          pair.server.close();
          await pair.dispose?.();
        }
      },
    });
  };

  it('carries frames both ways, byte for byte', async ({ client, server }) => {
    const atServer = new Inbox(server);
    const atClient = new Inbox(client);
    client.send(new Uint8Array([1, 2, 3]));
    await atServer.waitFor(1);
    assert.deepEqual([...atServer.frames[0]!], [1, 2, 3]);
    server.send(new Uint8Array([0, 255, 7]));
    await atClient.waitFor(1);
    assert.deepEqual([...atClient.frames[0]!], [0, 255, 7]);
  });

  it('keeps frame boundaries and order', async ({ client, server }) => {
    const atServer = new Inbox(server);
    const atClient = new Inbox(client);
    for (let i = 0; i < orderingFrames; i++) {
      client.send(numbered(i, 4 + ((i * 37) % 300)));
      server.send(numbered(i, 4 + ((i * 11) % 200)));
    }
    await Promise.all([atServer.waitFor(orderingFrames), atClient.waitFor(orderingFrames)]);
    assert.deepEqual(
      atServer.frames.map(numberOf),
      Array.from({ length: orderingFrames }, (_, i) => i),
    );
    assert.deepEqual(
      atClient.frames.map(numberOf),
      Array.from({ length: orderingFrames }, (_, i) => i),
    );
    assert.deepEqual(
      atServer.frames.map((f) => f.byteLength),
      Array.from({ length: orderingFrames }, (_, i) => 4 + ((i * 37) % 300)),
    );
    const last = atServer.frames[orderingFrames - 1]!;
    assert.ok(Buffer.from(last).equals(Buffer.from(numbered(orderingFrames - 1, last.byteLength))));
  });

  it('carries frames of exactly the maximum size', async ({ client, server }) => {
    const atServer = new Inbox(server);
    const atClient = new Inbox(client);
    const big = numbered(7, maxFrameBytes);
    client.send(big);
    server.send(big);
    await Promise.all([atServer.waitFor(1), atClient.waitFor(1)]);
    assert.equal(atServer.frames[0]!.byteLength, maxFrameBytes);
    assert.ok(Buffer.from(atServer.frames[0]!).equals(Buffer.from(big)));
    assert.ok(Buffer.from(atClient.frames[0]!).equals(Buffer.from(big)));
  });

  it('refuses an oversized frame with ERR_FRAME_TOO_LARGE and stays usable', async ({ client, server }) => {
    const atServer = new Inbox(server);
    let thrown: unknown;
    try {
      client.send(new Uint8Array(maxFrameBytes + 1));
    } catch (error) {
      thrown = error;
    }
    assert.ok(RjobError.hasCode(thrown, 'ERR_FRAME_TOO_LARGE'));
    client.send(new Uint8Array([42]));
    await atServer.waitFor(1);
    assert.deepEqual([...atServer.frames[0]!], [42]);
  });

  it('holds frames that arrive before a handler registers', async ({ client, server }) => {
    client.send(numbered(1, 8));
    client.send(numbered(2, 8));
    // Give the frames every chance to arrive first; the assertion holds either way.
    for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => setImmediate(resolve));
    const atServer = new Inbox(server);
    await atServer.waitFor(2);
    assert.deepEqual(atServer.frames.map(numberOf), [1, 2]);
  });

  it('propagates close to the peer, once, with a coded reason', async ({ client, server }) => {
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
    assert.ok(RjobError.is(reason));
    assert.equal(typeof reason.code, 'string');
    assert.ok(RjobError.is(await clientClosed));
    assert.deepEqual(atServer.frames.map(numberOf), [1, 2]);
    // Sending after close neither throws nor delivers.
    assert.equal(client.send(new Uint8Array([1])), false);
    assert.equal(server.send(new Uint8Array([1])), false);
    client.close();
    server.close();
    // A late handler still learns about the close.
    assert.ok(RjobError.is(await closed(client)));
    assert.equal(clientCloses, 1);
    assert.equal(serverCloses, 1);
  });

  it('propagates a close from the accepting side', async ({ client, server }) => {
    const clientClosed = closed(client);
    server.close('bye');
    assert.ok(RjobError.is(await clientClosed));
  });

  it('signals backpressure and drains without losing frames', async ({ client, server }) => {
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
          assert.equal(typeof client.onDrain, 'function');
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
    assert.deepEqual(
      atServer.frames.map(numberOf),
      Array.from({ length: total }, (_, i) => i),
    );
    // Whether a transport pushes back at all depends on its buffers, so `congested` is not
    // asserted; what is asserted is that pushing back never loses or reorders frames.
    assert.ok(congested >= 0);
  });
  return cases;
}
