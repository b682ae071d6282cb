/**
 * The in-memory state of one spool that its parts share: the façade (record-spool.ts), the writer
 * that brings the files in line with it, the reader, and the bound policy.
 */
import { ErrorCode, RjobError } from '@rjob/core';
import { AgentErrorCode } from '../errors.js';
import type { Segment } from './segment.js';
import {
  DEFAULT_SEGMENT_BYTES,
  DEFAULT_SPOOL_MAX_BYTES,
  DEFAULT_SYNC_INTERVAL_MS,
  DEFAULT_WRITE_BUFFER_BYTES,
  type RecordSpoolOptions,
  type SpoolPolicy,
} from './spool-types.js';
import { TailCache } from './tail-cache.js';

const MIN_SEGMENT_BYTES = 4 * 1024;

export class SpoolState {
  readonly dir: string;
  readonly policy: SpoolPolicy;
  readonly maxBytes: number;
  readonly segmentBytes: number;
  readonly writeBufferBytes: number;
  readonly syncIntervalMs: number;

  /** Live segments, oldest first; the last one takes the appends. */
  segments: Segment[] = [];
  /** Segments acknowledged or dropped, deleted by the writer's next pass. */
  doomed: Segment[] = [];
  /** Sequence number of the last record appended (0 when none). */
  lastSeq = 0;
  ackedSeq = 0;
  /** Bytes held on disk, including entries still buffered for writing. */
  bytes = 0;
  /** Bytes appended and not yet handed to the OS. */
  pendingBytes = 0;
  /** Every record up to here has been handed to the OS (the writer wrote it). */
  writtenSeq = 0;
  sealed = false;
  closed = false;
  /** Closed and every file handle released: the writer must not reopen anything. */
  released = false;
  failure: RjobError | undefined;
  /** Job id and location of the last record: what a warning the spool writes itself carries. */
  envelope = { jobId: 0, location: '' };
  readonly tail = new TailCache();
  #change: Deferred | undefined;

  constructor(options: RecordSpoolOptions) {
    this.dir = options.dir;
    this.policy = options.policy ?? 'block';
    this.maxBytes = positive(options.maxBytes, DEFAULT_SPOOL_MAX_BYTES, 'maxBytes');
    const segmentBytes = positive(options.segmentBytes, DEFAULT_SEGMENT_BYTES, 'segmentBytes');
    this.segmentBytes = Math.max(MIN_SEGMENT_BYTES, Math.min(segmentBytes, Math.floor(this.maxBytes / 4)));
    this.writeBufferBytes = positive(
      options.writeBufferBytes,
      DEFAULT_WRITE_BUFFER_BYTES,
      'writeBufferBytes',
    );
    this.syncIntervalMs = options.syncIntervalMs ?? DEFAULT_SYNC_INTERVAL_MS;
    if (this.policy !== 'block' && this.policy !== 'drop') {
      throw new RjobError(ErrorCode.InvalidArgument, `Unknown spool policy "${String(this.policy)}".`);
    }
  }

  /** Why an append cannot happen now, if it cannot. */
  appendProblem(): RjobError | undefined {
    if (this.failure) return this.failure;
    if (this.closed) return closedError(this.dir);
    if (this.sealed) return sealedError(this.dir);
    return undefined;
  }

  /** Why a read (or ack, or seal) cannot happen now, if it cannot. */
  readProblem(): RjobError | undefined {
    if (this.failure) return this.failure;
    if (this.closed) return closedError(this.dir);
    return undefined;
  }

  /** Resolves at the next {@link fireChange}. */
  nextChange(): Promise<void> {
    this.#change ??= deferred();
    return this.#change.promise;
  }

  /** Records were appended, or the spool's state changed: followers look again. */
  fireChange(): void {
    const change = this.#change;
    this.#change = undefined;
    change?.resolve();
  }
}

export interface Deferred {
  promise: Promise<void>;
  resolve(): void;
}

export function deferred(): Deferred {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) {
    throw new RjobError(ErrorCode.InvalidArgument, `${name} must be a positive number, not ${value}.`);
  }
  return Math.floor(value);
}

export function closedError(dir: string): RjobError {
  return new RjobError(AgentErrorCode.SpoolClosed, `The spool ${dir} is closed.`, { details: { dir } });
}

export function sealedError(dir: string): RjobError {
  return new RjobError(AgentErrorCode.SpoolSealed, `The spool ${dir} is sealed: its job writes no more.`, {
    details: { dir },
  });
}
