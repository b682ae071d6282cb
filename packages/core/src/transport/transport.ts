/**
 * The transport contract. A transport only turns a target into a framed, duplex message channel;
 * handshake, heartbeats, flow control, sequencing and resume are written once, in core, on top of
 * it (see docs/protocol.md and docs/writing-a-transport.md).
 */
import type { Duplex, Readable, Writable } from 'node:stream';
import { ErrorCode, RjobError } from '../errors.js';
import {
  assertFrameSize,
  DEFAULT_MAX_FRAME_BYTES,
  encodeFrame,
  FRAME_HEADER_BYTES,
  type FrameBudget,
  FrameDecoder,
  resolveMaxFrameBytes,
} from '../protocol/framing.js';
import { ProtocolErrorCode } from '../protocol/protocol-errors.js';

/**
 * One link to a peer, carrying whole frames (opaque bodies of at most `maxFrameBytes`).
 *
 * - `send` returns false when the link is congested; keep the frame (it was accepted) and wait for
 *   `onDrain` before sending more. After close, `send` drops the frame and returns false.
 *   A frame over `maxFrameBytes` throws ERR_FRAME_TOO_LARGE and the link stays usable.
 * - Frames arriving while no `onMessage` handler is registered are held and delivered, in order,
 *   to the next handler registered; that lets the handshake hand the link over without loss.
 * - `onClose` fires exactly once per side, with an RjobError: ERR_LINK_CLOSED for an ordinary
 *   close or cut, another code when the link failed (a bad frame, a truncated stream). A handler
 *   registered after the close is still called.
 */
export interface TransportChannel {
  // biome-ignore lint/suspicious/noConfusingVoidType: lets a transport forward to a write() that returns nothing.
  send(frame: Uint8Array): boolean | void;
  /** Registers a frame handler; returns a function that unregisters it. */
  onMessage(handler: (frame: Uint8Array) => void): () => void;
  close(reason?: Error | string): void;
  onClose(handler: (reason: RjobError) => void): () => void;
  /** Called when a congested link can take frames again. Optional: without it, `send` never says false. */
  onDrain?(handler: () => void): () => void;
  /** The largest frame this link carries. */
  readonly maxFrameBytes?: number;
}

export interface ConnectOptions {
  /** Aborts a connection attempt in progress. */
  signal?: AbortSignal;
  /** Largest frame body in bytes. Default 16 MiB. */
  maxFrameBytes?: number;
}

/** What a transport author writes. */
export interface TransportInit<Target> {
  /** Short name, e.g. `ssh`, `ws`, `memory`. */
  readonly name: string;
  /** Reaches `target` and resolves with an open link. `options.maxFrameBytes` is always set. */
  connect(target: Target, options: ConnectOptions & { maxFrameBytes: number }): Promise<TransportChannel>;
}

export interface Transport<Target> {
  readonly name: string;
  connect(target: Target, options?: ConnectOptions): Promise<TransportChannel>;
}

/** Checks a transport definition and returns the transport the session client uses. */
export function defineTransport<Target>(init: TransportInit<Target>): Transport<Target> {
  if (typeof init?.name !== 'string' || init.name.length === 0 || typeof init.connect !== 'function') {
    throw new RjobError(ErrorCode.InvalidArgument, 'A transport needs a name and a connect function.');
  }
  const { name } = init;
  return Object.freeze({
    name,
    async connect(target: Target, options: ConnectOptions = {}): Promise<TransportChannel> {
      options.signal?.throwIfAborted();
      const maxFrameBytes = resolveMaxFrameBytes(options.maxFrameBytes);
      return init.connect(target, { ...options, maxFrameBytes });
    },
  });
}

/** Turns anything passed to `close` into the RjobError reported by `onClose`. */
export function toCloseReason(reason: unknown, fallback = 'Link closed.'): RjobError {
  if (RjobError.is(reason)) return reason;
  if (reason === undefined) return new RjobError(ProtocolErrorCode.LinkClosed, fallback);
  const message =
    typeof reason === 'string' ? reason : reason instanceof Error ? reason.message : String(reason);
  return new RjobError(
    ProtocolErrorCode.LinkClosed,
    message,
    reason instanceof Error ? { cause: reason } : {},
  );
}

export interface ChannelDriver {
  /** Puts a frame on the wire; false when congested. Never called after close. */
  // biome-ignore lint/suspicious/noConfusingVoidType: same reason as TransportChannel.send.
  write(frame: Uint8Array): boolean | void;
  /** Tears the link down. Called once, on local close. */
  terminate(reason: RjobError): void;
  /** Largest frame body, default 16 MiB. */
  maxFrameBytes?: number;
}

export interface ChannelController {
  readonly channel: TransportChannel;
  /** Hands a received frame to the channel's handlers (or holds it until one registers). */
  deliver(frame: Uint8Array): void;
  /** Tells the channel a congested link has room again. */
  drained(): void;
  /** Tells the channel the link is gone (the remote end closed, or it failed). */
  closed(reason?: unknown): void;
  readonly isClosed: boolean;
}

/**
 * The bookkeeping every transport needs (handler lists, holding frames until a handler exists,
 * close-once, frame-size checks), so a transport author only writes `write` and `terminate`.
 */
export function createChannelController(driver: ChannelDriver): ChannelController {
  const maxFrameBytes = resolveMaxFrameBytes(driver.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES);
  const messageHandlers = new Set<(frame: Uint8Array) => void>();
  const closeHandlers = new Set<(reason: RjobError) => void>();
  const drainHandlers = new Set<() => void>();
  const held: Uint8Array[] = [];
  let flushScheduled = false;
  let closeReason: RjobError | undefined;

  const dispatch = (frame: Uint8Array): void => {
    for (const handler of [...messageHandlers]) handler(frame);
  };
  const flushHeld = (): void => {
    flushScheduled = false;
    while (held.length > 0 && messageHandlers.size > 0 && !closeReason) dispatch(held.shift()!);
  };
  const scheduleFlush = (): void => {
    if (flushScheduled) return;
    flushScheduled = true;
    queueMicrotask(flushHeld);
  };
  const finish = (reason: RjobError): void => {
    closeReason = reason;
    held.length = 0;
    messageHandlers.clear();
    drainHandlers.clear();
    for (const handler of [...closeHandlers]) handler(reason);
    closeHandlers.clear();
  };

  const channel: TransportChannel = {
    maxFrameBytes,
    send(frame) {
      if (closeReason) return false;
      assertFrameSize(frame.byteLength, maxFrameBytes);
      if (frame.byteLength === 0) {
        throw new RjobError(ProtocolErrorCode.FrameMalformed, 'A frame cannot be empty.');
      }
      return driver.write(frame) !== false;
    },
    onMessage(handler) {
      if (closeReason) return () => {};
      messageHandlers.add(handler);
      if (held.length > 0) scheduleFlush();
      return () => messageHandlers.delete(handler);
    },
    close(reason) {
      if (closeReason) return;
      const normalized = toCloseReason(reason, 'Link closed locally.');
      // Mark closed before terminating so frames the driver still reports are ignored.
      closeReason = normalized;
      try {
        driver.terminate(normalized);
      } finally {
        finish(normalized);
      }
    },
    onClose(handler) {
      if (closeReason) {
        const reason = closeReason;
        queueMicrotask(() => handler(reason));
        return () => {};
      }
      closeHandlers.add(handler);
      return () => closeHandlers.delete(handler);
    },
    onDrain(handler) {
      if (closeReason) return () => {};
      drainHandlers.add(handler);
      return () => drainHandlers.delete(handler);
    },
  };

  return {
    channel,
    get isClosed() {
      return closeReason !== undefined;
    },
    deliver(frame) {
      if (closeReason) return;
      if (messageHandlers.size === 0 || held.length > 0) {
        held.push(frame);
        if (messageHandlers.size > 0) scheduleFlush();
        return;
      }
      dispatch(frame);
    },
    drained() {
      if (closeReason) return;
      for (const handler of [...drainHandlers]) handler();
    },
    closed(reason) {
      if (closeReason) return;
      // Frames that arrived before the close still belong to the conversation (an `error`
      // message followed by the close, typically).
      if (messageHandlers.size > 0) while (held.length > 0) dispatch(held.shift()!);
      finish(toCloseReason(reason, 'Link closed by the peer.'));
    },
  };
}

export interface DuplexChannelOptions {
  /** Largest frame body in bytes, both ways. Default 16 MiB. */
  maxFrameBytes?: number;
  /**
   * Shared cap on bytes held for partly received frames, across every channel given the same
   * budget (an agent passes one to all its connections). A channel that would pass it closes with
   * ERR_FRAME_BUDGET. Default: none beyond this channel's `maxFrameBytes`.
   */
  budget?: FrameBudget;
}

/** A byte stream to frame: a Duplex (socket), or a readable and a writable (child stdio). */
export type ByteStream = Duplex | { readable: Readable; writable: Writable };

/** Bodies from this size on are written after their length prefix, not copied behind it. */
const GATHER_FRAME_BYTES = 64 * 1024;

/**
 * Writes one frame. A small body is copied behind its prefix (one buffer, one write); a large one
 * (a batch of records) is written as prefix and body together through cork/uncork, which a socket
 * turns into one writev, so its bytes are not copied again on the way out.
 */
function writeFrame(writable: Writable, body: Uint8Array, maxFrameBytes: number): boolean {
  if (body.byteLength < GATHER_FRAME_BYTES) return writable.write(encodeFrame(body, { maxFrameBytes }));
  assertFrameSize(body.byteLength, maxFrameBytes);
  const prefix = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  prefix.writeUInt32BE(body.byteLength, 0);
  writable.cork();
  writable.write(prefix);
  const ok = writable.write(body);
  writable.uncork();
  return ok;
}

/**
 * Adapts a Node byte stream (a socket, a child's stdio) to a {@link TransportChannel} using the
 * length-prefixed framing of docs/protocol.md. A bad or oversized frame closes the channel with
 * its coded error and destroys the stream.
 */
export function channelFromDuplex(stream: ByteStream, options: DuplexChannelOptions = {}): TransportChannel {
  // A Duplex has boolean `readable`/`writable` properties; the pair form has streams there.
  const pair = stream as { readable: unknown; writable: unknown };
  const readable = isStream(pair.readable) ? (pair.readable as Readable) : (stream as Duplex);
  const writable = isStream(pair.writable) ? (pair.writable as Writable) : (stream as Duplex);
  const maxFrameBytes = resolveMaxFrameBytes(options.maxFrameBytes);
  const decoder = new FrameDecoder({ maxFrameBytes, ...(options.budget ? { budget: options.budget } : {}) });

  const cleanup = (): void => {
    // Whatever part of a frame is still held goes back to the shared budget.
    decoder.dispose();
    readable.off('data', onData);
    readable.off('end', onEnd);
    readable.off('error', onError);
    readable.off('close', onEnd);
    writable.off('error', onError);
    writable.off('close', onEnd);
    writable.off('drain', onDrain);
  };

  // Frames written in one turn of the event loop leave together (one writev on a socket): an
  // agent's welcome, opened, ack and credit, or a batch of events, cross an SSH connection as one
  // packet rather than four.
  let corked = false;
  const uncork = (): void => {
    corked = false;
    writable.uncork();
  };
  const controller = createChannelController({
    maxFrameBytes,
    write: (frame) => {
      if (!corked) {
        corked = true;
        writable.cork();
        setImmediate(uncork);
      }
      return writeFrame(writable, frame, maxFrameBytes);
    },
    terminate() {
      cleanup();
      // Swallow late errors (EPIPE after the peer went away): the channel is already closed.
      readable.on('error', () => {});
      writable.on('error', () => {});
      // End rather than destroy, so frames already queued (a final `error` or `close` message)
      // still reach the peer; nothing more is read.
      readable.pause();
      writable.end(() => destroyBoth());
    },
  });

  function destroyBoth(): void {
    if (readable !== (writable as unknown)) readable.destroy();
    writable.destroy();
  }

  function failWith(error: unknown): void {
    controller.channel.close(RjobError.is(error) ? error : toCloseReason(error));
  }

  function onData(chunk: Buffer | string): void {
    if (controller.isClosed) return;
    let frames: Uint8Array[];
    try {
      frames = decoder.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
    } catch (error) {
      failWith(error);
      return;
    }
    for (const frame of frames) controller.deliver(frame);
  }
  function onEnd(): void {
    if (controller.isClosed) return;
    try {
      decoder.end();
    } catch (error) {
      cleanup();
      controller.closed(error);
      destroyBoth();
      return;
    }
    cleanup();
    controller.closed(undefined);
    destroyBoth();
  }
  function onError(error: Error): void {
    if (controller.isClosed) return;
    cleanup();
    controller.closed(
      new RjobError(ProtocolErrorCode.LinkClosed, `Link failed: ${error.message}`, { cause: error }),
    );
    destroyBoth();
  }
  function onDrain(): void {
    controller.drained();
  }

  readable.on('data', onData);
  readable.on('end', onEnd);
  readable.on('close', onEnd);
  readable.on('error', onError);
  if (writable !== (readable as unknown)) {
    writable.on('error', onError);
    writable.on('close', onEnd);
  }
  writable.on('drain', onDrain);
  return controller.channel;
}

function isStream(value: unknown): boolean {
  return typeof value === 'object' && value !== null && typeof (value as { on?: unknown }).on === 'function';
}
