/**
 * An in-memory transport for tests: a pair of linked channels that a test can cut, delay or stall
 * on command, plus a tiny "network" so code that connects through a {@link Transport} can be
 * tested without sockets.
 */
import { ErrorCode, RjobError } from '../errors.js';
import { DEFAULT_MAX_FRAME_BYTES } from '../protocol/framing.js';
import { ProtocolErrorCode } from '../protocol/protocol-errors.js';
import {
  type ChannelController,
  createChannelController,
  defineTransport,
  type Transport,
  type TransportChannel,
} from '../transport/transport.js';

export interface MemoryLinkOptions {
  /** Largest frame body in bytes. Default 16 MiB. */
  maxFrameBytes?: number;
  /**
   * Bytes queued in one direction above which `send` returns false (and `onDrain` fires once the
   * queue is delivered). Default 1 MiB.
   */
  highWaterMarkBytes?: number;
  /** Delivery delay in milliseconds (via `setTimeout`, so fake timers control it). Default 0: next microtask. */
  delayMs?: number;
}

export type MemoryLinkSide = 'a' | 'b';

export interface MemoryLink {
  /** One end (by convention the client). */
  readonly a: TransportChannel;
  /** The other end (by convention the server). */
  readonly b: TransportChannel;
  /**
   * Cuts the link as a network failure would: frames in flight are lost and both sides see
   * `onClose` with ERR_LINK_CLOSED.
   */
  cut(reason?: string): void;
  /** Stops delivering frames both ways; they queue (and `send` soon returns false). */
  stall(): void;
  /** Delivers what queued during a stall and goes on as normal. */
  unstall(): void;
  /** Changes the delivery delay for frames sent from now on. */
  setDelay(delayMs: number): void;
  /** Delivers `frame` to `side` as if the other side had sent it, bypassing checks (for fuzzing). */
  inject(side: MemoryLinkSide, frame: Uint8Array): void;
  readonly closed: boolean;
  readonly stalled: boolean;
  /** Frames and bytes queued towards each side, not yet delivered. */
  queued(side: MemoryLinkSide): { frames: number; bytes: number };
}

interface Direction {
  target: ChannelController;
  source: ChannelController;
  /** `dueAtMs` is a `Date.now()` time, or 0 for "next microtask". */
  queue: { frame: Uint8Array; dueAtMs: number }[];
  bytes: number;
  congested: boolean;
  scheduled: boolean;
}

/** Creates two channels joined by an in-memory link. */
export function createMemoryLink(options: MemoryLinkOptions = {}): MemoryLink {
  const maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  const highWaterMarkBytes = options.highWaterMarkBytes ?? 1024 * 1024;
  let delayMs = options.delayMs ?? 0;
  let stalled = false;
  let closed = false;

  const toA = {} as Direction;
  const toB = {} as Direction;

  const makeController = (outgoing: Direction): ChannelController =>
    createChannelController({
      maxFrameBytes,
      write(frame) {
        if (closed) return false;
        // Copy: the sender may reuse its buffer, as it could with a socket.
        outgoing.queue.push({ frame: frame.slice(), dueAtMs: delayMs > 0 ? Date.now() + delayMs : 0 });
        outgoing.bytes += frame.byteLength;
        schedule(outgoing);
        if (outgoing.bytes >= highWaterMarkBytes) outgoing.congested = true;
        return !outgoing.congested;
      },
      terminate() {
        // An orderly local close: deliver what was already sent, then the peer sees the close.
        closeLink(undefined, true);
      },
    });

  const a = makeController(toB);
  const b = makeController(toA);
  Object.assign(toA, { target: a, source: b, queue: [], bytes: 0, congested: false, scheduled: false });
  Object.assign(toB, { target: b, source: a, queue: [], bytes: 0, congested: false, scheduled: false });

  function schedule(direction: Direction): void {
    if (direction.scheduled || stalled || closed || direction.queue.length === 0) return;
    direction.scheduled = true;
    const wait = direction.queue[0]!.dueAtMs - Date.now();
    const run = (): void => {
      direction.scheduled = false;
      pump(direction);
    };
    if (wait > 0) setTimeout(run, wait);
    else queueMicrotask(run);
  }

  function pump(direction: Direction): void {
    // Deliver in order; a frame with a delay waits for its timer, frames behind it wait too.
    while (!stalled && !closed && direction.queue.length > 0) {
      const next = direction.queue[0]!;
      if (next.dueAtMs > Date.now()) {
        schedule(direction);
        return;
      }
      direction.queue.shift();
      direction.bytes -= next.frame.byteLength;
      direction.target.deliver(next.frame);
    }
    if (direction.congested && direction.bytes < highWaterMarkBytes && !closed) {
      direction.congested = false;
      direction.source.drained();
    }
  }

  function closeLink(reason: string | undefined, orderly: boolean): void {
    if (closed) return;
    if (orderly) {
      // Frames already sent still arrive (even during a stall), as on a socket that is ended.
      for (const d of [toA, toB]) {
        while (d.queue.length > 0) {
          const next = d.queue.shift()!;
          d.target.deliver(next.frame);
        }
      }
    }
    closed = true;
    for (const d of [toA, toB]) {
      d.queue.length = 0;
      d.bytes = 0;
    }
    const message = reason ?? (orderly ? 'Link closed.' : 'Link cut.');
    a.closed(new RjobError(ProtocolErrorCode.LinkClosed, message));
    b.closed(new RjobError(ProtocolErrorCode.LinkClosed, message));
  }

  return {
    a: a.channel,
    b: b.channel,
    cut(reason) {
      closeLink(reason ?? 'Link cut.', false);
    },
    stall() {
      stalled = true;
    },
    unstall() {
      stalled = false;
      schedule(toA);
      schedule(toB);
    },
    setDelay(ms) {
      if (!Number.isFinite(ms) || ms < 0)
        throw new RjobError(ErrorCode.InvalidArgument, 'delayMs must be >= 0.');
      delayMs = ms;
    },
    inject(side, frame) {
      (side === 'a' ? a : b).deliver(frame);
    },
    get closed() {
      return closed;
    },
    get stalled() {
      return stalled;
    },
    queued(side) {
      const d = side === 'a' ? toA : toB;
      return { frames: d.queue.length, bytes: d.bytes };
    },
  };
}

export interface MemoryNetwork {
  /** A transport whose targets are addresses registered with {@link MemoryNetwork.listen}. */
  readonly transport: Transport<string>;
  /** Accepts connections to `address`; returns a function that stops listening. */
  listen(address: string, onConnection: (channel: TransportChannel, link: MemoryLink) => void): () => void;
  /** Every link made so far, oldest first, so a test can cut or stall them. */
  readonly links: readonly MemoryLink[];
}

/** An in-memory network of listeners, reachable through {@link MemoryNetwork.transport}. */
export function createMemoryNetwork(options: MemoryLinkOptions = {}): MemoryNetwork {
  const listeners = new Map<string, (channel: TransportChannel, link: MemoryLink) => void>();
  const links: MemoryLink[] = [];
  const transport = defineTransport<string>({
    name: 'memory',
    async connect(address, connectOptions) {
      const accept = listeners.get(address);
      if (!accept) {
        throw new RjobError(ProtocolErrorCode.LinkClosed, `Nothing listens on memory address ${address}.`, {
          details: { address },
        });
      }
      const link = createMemoryLink({ ...options, maxFrameBytes: connectOptions.maxFrameBytes });
      links.push(link);
      accept(link.b, link);
      return link.a;
    },
  });
  return {
    transport,
    links,
    listen(address, onConnection) {
      if (listeners.has(address)) {
        throw new RjobError(ErrorCode.InvalidArgument, `Memory address ${address} is already in use.`);
      }
      listeners.set(address, onConnection);
      return () => {
        if (listeners.get(address) === onConnection) listeners.delete(address);
      };
    },
  };
}
