/**
 * Length-prefixed framing for byte streams (sockets, child stdio): each frame is a 4-byte unsigned
 * big-endian body length followed by that many body bytes. Message transports (WebSocket) carry
 * one frame body per message and need none of this.
 */
import { ErrorCode, RjobError } from '../errors.js';
import { ProtocolErrorCode } from './protocol-errors.js';

/** Size of the length prefix. */
export const FRAME_HEADER_BYTES = 4;

/**
 * Default largest frame body: 16 MiB. Big enough for a large batch of records, small enough that a
 * hostile or broken peer cannot make us allocate much before we notice.
 */
export const DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024;

/** The length prefix is a uint32, so no body can be larger than this whatever the option says. */
const ABSOLUTE_MAX_FRAME_BYTES = 0xffff_ffff;

/**
 * Default budget for bytes of partly received frames, all connections sharing one
 * {@link FrameBudget} together: 64 MiB, four frames of the default maximum size at once.
 */
export const DEFAULT_FRAME_BUDGET_BYTES = 64 * 1024 * 1024;

/**
 * A cap on the bytes that many decoders together hold for frames they have not yet received in
 * full. One connection is limited by `maxFrameBytes`; without a shared cap, many connections each
 * sending most of a large frame and then stalling would grow the receiver without bound. A decoder
 * that would take the total past `limitBytes` fails with ERR_FRAME_BUDGET (its connection is
 * closed) and gives back what it held; the others are untouched.
 */
export class FrameBudget {
  readonly limitBytes: number;
  #used = 0;
  #peak = 0;

  constructor(limitBytes: number = DEFAULT_FRAME_BUDGET_BYTES) {
    if (!Number.isSafeInteger(limitBytes) || limitBytes < 1) {
      throw new RjobError(ErrorCode.InvalidArgument, 'A frame budget must be a positive integer of bytes.', {
        details: { limitBytes },
      });
    }
    this.limitBytes = limitBytes;
  }

  /** Bytes held now by the decoders sharing this budget. */
  get usedBytes(): number {
    return this.#used;
  }

  /** The most ever held at once. */
  get peakBytes(): number {
    return this.#peak;
  }

  /** Takes `bytes` from the budget; false (and nothing taken) when that would pass the limit. */
  tryReserve(bytes: number): boolean {
    if (this.#used + bytes > this.limitBytes) return false;
    this.#used += bytes;
    if (this.#used > this.#peak) this.#peak = this.#used;
    return true;
  }

  /** Gives back `bytes` taken earlier. */
  release(bytes: number): void {
    this.#used = Math.max(0, this.#used - bytes);
  }
}

export interface FramingOptions {
  /**
   * Largest frame body accepted or produced, in bytes. Default {@link DEFAULT_MAX_FRAME_BYTES}
   * (16 MiB). Both peers should use the same value; the receiver's is the one enforced.
   */
  maxFrameBytes?: number;
  /**
   * Shared cap on bytes held for incomplete frames (decoding only). Default: none beyond
   * `maxFrameBytes` for this decoder alone.
   */
  budget?: FrameBudget;
}

export function resolveMaxFrameBytes(value: number | undefined): number {
  if (value === undefined) return DEFAULT_MAX_FRAME_BYTES;
  if (!Number.isSafeInteger(value) || value < 1 || value > ABSOLUTE_MAX_FRAME_BYTES) {
    throw new RjobError(
      ErrorCode.InvalidArgument,
      `maxFrameBytes must be an integer in 1..${ABSOLUTE_MAX_FRAME_BYTES}.`,
      {
        details: { maxFrameBytes: value },
      },
    );
  }
  return value;
}

/** Throws ERR_FRAME_TOO_LARGE when a body cannot be sent under `maxFrameBytes`. */
export function assertFrameSize(bodyBytes: number, maxFrameBytes: number): void {
  if (bodyBytes > maxFrameBytes) {
    throw new RjobError(
      ProtocolErrorCode.FrameTooLarge,
      `Frame of ${bodyBytes} bytes exceeds the limit of ${maxFrameBytes} bytes.`,
      { details: { frameBytes: bodyBytes, maxFrameBytes } },
    );
  }
}

/** Prefixes `body` with its length. Throws ERR_FRAME_TOO_LARGE when it is over the limit. */
export function encodeFrame(body: Uint8Array, options: FramingOptions = {}): Uint8Array {
  const maxFrameBytes = resolveMaxFrameBytes(options.maxFrameBytes);
  assertFrameSize(body.byteLength, maxFrameBytes);
  if (body.byteLength === 0) {
    throw new RjobError(ProtocolErrorCode.FrameMalformed, 'A frame body cannot be empty.');
  }
  const out = new Uint8Array(FRAME_HEADER_BYTES + body.byteLength);
  new DataView(out.buffer).setUint32(0, body.byteLength, false);
  out.set(body, FRAME_HEADER_BYTES);
  return out;
}

/**
 * Incremental decoder. Feed it chunks cut anywhere; it returns the complete frame bodies so far.
 *
 * Once it has thrown, the stream is out of sync and cannot be trusted again, so every later call
 * throws the same error: the only safe reaction is to close the connection.
 */
export class FrameDecoder {
  readonly maxFrameBytes: number;
  // Pending chunks are kept as a list and joined only when a frame completes, so a large frame
  // arriving in many small chunks costs one copy, not one per chunk.
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  /** Body length of the frame being assembled, or -1 while its header is incomplete. */
  #expected = -1;
  #failed: RjobError | undefined;
  readonly #budget: FrameBudget | undefined;
  /** Bytes taken from the budget: what {@link #buffered} was after the last push. */
  #reserved = 0;

  constructor(options: FramingOptions = {}) {
    this.maxFrameBytes = resolveMaxFrameBytes(options.maxFrameBytes);
    this.#budget = options.budget;
  }

  /** Bytes held for an incomplete frame. Never more than `maxFrameBytes + 4`. */
  get bufferedBytes(): number {
    return this.#buffered;
  }

  /** Adds a chunk and returns the frame bodies it completed (possibly none). */
  push(chunk: Uint8Array): Uint8Array[] {
    if (this.#failed) throw this.#failed;
    const frames: Uint8Array[] = [];
    if (chunk.byteLength === 0) return frames;
    this.#chunks.push(chunk);
    this.#buffered += chunk.byteLength;
    try {
      for (;;) {
        if (this.#expected < 0) {
          if (this.#buffered < FRAME_HEADER_BYTES) break;
          const header = this.#take(FRAME_HEADER_BYTES);
          const length = new DataView(header.buffer, header.byteOffset, FRAME_HEADER_BYTES).getUint32(
            0,
            false,
          );
          // Checked from the header alone: an oversized frame is refused before any of its body
          // is buffered.
          if (length > this.maxFrameBytes) {
            throw new RjobError(
              ProtocolErrorCode.FrameTooLarge,
              `Incoming frame of ${length} bytes exceeds the limit of ${this.maxFrameBytes} bytes.`,
              { details: { frameBytes: length, maxFrameBytes: this.maxFrameBytes } },
            );
          }
          if (length === 0) {
            throw new RjobError(ProtocolErrorCode.FrameMalformed, 'Incoming frame has an empty body.');
          }
          this.#expected = length;
        }
        if (this.#buffered < this.#expected) break;
        frames.push(this.#take(this.#expected));
        this.#expected = -1;
      }
      // Only what stays buffered counts: a chunk that completes its frames never fails here.
      if (this.#budget) this.#settleBudget(this.#budget);
    } catch (error) {
      this.#fail(error as RjobError);
      throw error;
    }
    return frames;
  }

  /**
   * Declares the end of the stream. Throws ERR_FRAME_TRUNCATED when it stopped inside a frame,
   * which tells a clean close from a cut one.
   */
  end(): void {
    if (this.#failed) throw this.#failed;
    if (this.#buffered > 0) {
      const error = new RjobError(
        ProtocolErrorCode.FrameTruncated,
        `Stream ended inside a frame (${this.#buffered} bytes pending).`,
        { details: { pendingBytes: this.#buffered, expectedBytes: this.#expected } },
      );
      this.#fail(error);
      throw error;
    }
  }

  /**
   * Drops whatever is buffered and gives its bytes back to the budget; later calls throw
   * ERR_CHANNEL_CLOSED. For the owner of a connection that closed for another reason.
   */
  dispose(): void {
    if (this.#failed) return;
    this.#fail(new RjobError(ProtocolErrorCode.ChannelClosed, 'The frame decoder was disposed.'));
  }

  #settleBudget(budget: FrameBudget): void {
    const held = this.#buffered;
    if (held < this.#reserved) {
      budget.release(this.#reserved - held);
      this.#reserved = held;
    } else if (held > this.#reserved) {
      if (!budget.tryReserve(held - this.#reserved)) {
        throw new RjobError(
          ProtocolErrorCode.FrameBudget,
          `Incomplete frames would hold more than the ${budget.limitBytes} bytes allowed across all connections.`,
          {
            details: {
              pendingBytes: held,
              budgetBytes: budget.limitBytes,
              budgetUsedBytes: budget.usedBytes,
            },
          },
        );
      }
      this.#reserved = held;
    }
  }

  #fail(error: RjobError): void {
    this.#failed = error;
    this.#chunks = [];
    this.#buffered = 0;
    this.#budget?.release(this.#reserved);
    this.#reserved = 0;
  }

  /** Removes exactly `n` bytes from the front of the pending chunks; `n <= #buffered`. */
  #take(n: number): Uint8Array {
    const first = this.#chunks[0]!;
    if (first.byteLength === n) {
      this.#chunks.shift();
      this.#buffered -= n;
      return first.slice();
    }
    if (first.byteLength > n) {
      this.#chunks[0] = first.subarray(n);
      this.#buffered -= n;
      return first.slice(0, n);
    }
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.#chunks[0]!;
      const want = n - filled;
      if (chunk.byteLength <= want) {
        out.set(chunk, filled);
        filled += chunk.byteLength;
        this.#chunks.shift();
      } else {
        out.set(chunk.subarray(0, want), filled);
        this.#chunks[0] = chunk.subarray(want);
        filled = n;
      }
    }
    this.#buffered -= n;
    return out;
  }
}
