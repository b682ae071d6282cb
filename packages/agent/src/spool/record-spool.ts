/**
 * A per-job, disk-backed, append-only log of job records: what the agent keeps for a receiver that
 * is disconnected, slow, or gone until the agent restarts.
 *
 * On disk a spool is a directory of segment files (`<firstSeq>.seg`, see segment-format.ts) and a
 * small `spool.meta` (acknowledged position, sealed flag) replaced atomically. Records are numbered
 * by the spool from 1 without gaps; for a job's records that is the same `seq` the JobManager gave
 * them.
 *
 * The spool's parts, one file each: the writer (spool-writer.ts), the reader (spool-reader.ts),
 * recovery (spool-recovery.ts), the caches (tail-cache.ts, handle-cache.ts) and the bound policy
 * (spool-bound.ts), on the state they share (spool-state.ts). This file is the spool as the agent
 * uses it, and what other modules import.
 */
import { rm } from 'node:fs/promises';
import { ErrorCode, type JobRecord, RjobError } from '@rjob/core';
import { encodeRecordEntries } from '@rjob/core/codec';
import { diskFullError, isSpaceError } from '../errors.js';
import { addIndexPoint, newSegment, type Segment } from './segment.js';
import { encodeEntry, HEADER_BYTES, MAX_ENTRY_PAYLOAD_BYTES, stampEntry } from './segment-format.js';
import { SpoolBound } from './spool-bound.js';
import { SpoolReader } from './spool-reader.js';
import { recoverSpool } from './spool-recovery.js';
import { closedError, SpoolState, sealedError } from './spool-state.js';
import type {
  PackedRecords,
  RecordSpoolOptions,
  SpoolFollowOptions,
  SpoolPolicy,
  SpoolReadOptions,
} from './spool-types.js';
import { SpoolWriter } from './spool-writer.js';

export {
  DEFAULT_SEGMENT_BYTES,
  DEFAULT_SPOOL_MAX_BYTES,
  DEFAULT_SYNC_INTERVAL_MS,
  DEFAULT_WRITE_BUFFER_BYTES,
  isSpoolGapRecord,
  type PackedRecords,
  type RecordSpoolOptions,
  type SpoolFollowOptions,
  type SpoolGap,
  type SpoolGapRecord,
  type SpoolPolicy,
  type SpoolReadOptions,
} from './spool-types.js';

/**
 * A job's records on disk, readable from any sequence number until acknowledged.
 *
 * - `append` numbers and buffers a record; buffered entries reach the OS within one event-loop
 *   turn, and before any `read` returns, so a record a reader has seen survives a SIGKILL of the
 *   agent. fsync is batched (`syncIntervalMs`).
 * - `read` / `follow` return records from a sequence number, as stored; `ack` frees everything up
 *   to one.
 * - Memory stays bounded: one write buffer, a read-ahead buffer per read, and a sparse index.
 */
export class RecordSpool {
  readonly dir: string;
  readonly policy: SpoolPolicy;
  readonly maxBytes: number;
  readonly segmentBytes: number;
  readonly #s: SpoolState;
  readonly #bound: SpoolBound;
  readonly #writer: SpoolWriter;
  readonly #reader: SpoolReader;
  #closing: Promise<void> | undefined;

  private constructor(options: RecordSpoolOptions) {
    const state = new SpoolState(options);
    this.#s = state;
    this.dir = state.dir;
    this.policy = state.policy;
    this.maxBytes = state.maxBytes;
    this.segmentBytes = state.segmentBytes;
    this.#bound = new SpoolBound(state, {
      accept: (record, entry) => this.#accept(record, entry),
      discardOldest: () => this.#discardOldest(),
      scheduleFlush: () => this.#writer.scheduleFlush(),
    });
    this.#writer = new SpoolWriter(state, {
      accept: (record, entry) => this.#accept(record, entry),
      changed: () => this.#s.fireChange(),
      rejectAppends: (error) => this.#bound.rejectWaiters(error),
      updateWritable: () => this.#bound.updateWritable(),
    });
    this.#reader = new SpoolReader(state, this.#writer);
  }

  /**
   * Opens (or creates) the spool in `options.dir`. After a crash this recovers every complete
   * entry and cuts off a torn tail, so appends continue right after the last intact record.
   */
  static async open(options: RecordSpoolOptions): Promise<RecordSpool> {
    const spool = new RecordSpool(options);
    try {
      await recoverSpool(spool.#s);
      spool.#bound.settle();
    } catch (error) {
      if (isSpaceError(error)) throw diskFullError(`the spool ${spool.dir}`, error);
      throw error;
    }
    return spool;
  }

  /** Sequence number of the last record appended (0 when none). */
  get lastSeq(): number {
    return this.#s.lastSeq;
  }

  /** Everything up to here was acknowledged and is no longer readable. */
  get ackedSeq(): number {
    return this.#s.ackedSeq;
  }

  /** Bytes held on disk, including entries still buffered for writing. */
  get bytes(): number {
    return this.#s.bytes;
  }

  /** Records deleted by the `drop` policy since this spool was opened. */
  get droppedRecords(): number {
    return this.#bound.droppedRecords;
  }

  /** True once {@link seal} was called (here or before a restart): the job writes no more. */
  get sealed(): boolean {
    return this.#s.sealed;
  }

  get closed(): boolean {
    return this.#s.closed;
  }

  /** True while writes fail for space and the job's output waits for it (see spool-writer.ts). */
  get pausedForSpace(): boolean {
    return this.#writer.pausedForSpace;
  }

  /**
   * False while an append would have to wait (the `block` bound is reached, or the write buffer is
   * full) or cannot happen at all. A producer that can pause polls this after each append and
   * resumes from {@link onWritable}.
   */
  get writable(): boolean {
    return this.#bound.writable;
  }

  /** Calls `listener` each time {@link writable} turns true again. Returns an unsubscribe function. */
  onWritable(listener: () => void): () => void {
    return this.#bound.onWritable(listener);
  }

  /** Resolves when {@link writable} is true; rejects if the spool is closed, sealed or failed. */
  waitWritable(): Promise<void> {
    return this.#bound.waitWritable(() => this.#s.appendProblem());
  }

  /**
   * Appends a record and resolves with its sequence number once the spool has taken it (not
   * once it is on disk: see {@link flush} and {@link sync}). With the `block` policy and a full
   * spool, it resolves only after acknowledgements freed enough space; appends are taken in call
   * order. Await each append (or watch {@link writable}) to keep memory bounded.
   *
   * Rejects with ERR_VALUE_NOT_CLONEABLE for data that cannot be encoded, ERR_SPOOL_SEALED,
   * ERR_SPOOL_CLOSED or ERR_SPOOL_IO.
   */
  append(record: JobRecord): Promise<number> {
    const problem = this.#s.appendProblem();
    if (problem) return Promise.reject(problem);
    let entry: Buffer;
    try {
      entry = encodeEntry(record);
    } catch (error) {
      return Promise.reject(error);
    }
    const payloadBytes = entry.length - HEADER_BYTES;
    if (payloadBytes > MAX_ENTRY_PAYLOAD_BYTES) return Promise.reject(tooLarge(payloadBytes));
    const sizeBytes = entry.length;
    if (this.#bound.waiting || !this.#bound.hasRoom(sizeBytes)) {
      if (this.policy === 'block') {
        return this.#bound.wait(record, entry);
      }
      this.#bound.dropFor(sizeBytes);
    }
    const seq = this.#accept(record, entry);
    if (this.#s.pendingBytes >= this.#s.writeBufferBytes) return this.#writer.kick().then(() => seq);
    this.#writer.scheduleFlush();
    return Promise.resolve(seq);
  }

  /**
   * {@link append} for several records, in order, encoded into one buffer: what a producer that
   * hands over records in bulk uses. Resolves with the last one's sequence number once the spool
   * has taken them all, with the same waiting and dropping as one `append` per record.
   *
   * A record whose data cannot be encoded is stored as an error record that says why (the same
   * ERR_VALUE_NOT_CLONEABLE that `append` rejects with), so one bad value does not cost the rest.
   */
  appendMany(records: readonly JobRecord[]): Promise<number> {
    const problem = this.#s.appendProblem();
    if (problem) return Promise.reject(problem);
    if (records.length === 0) return Promise.resolve(this.#s.lastSeq);
    const firstSeq = this.#s.lastSeq + 1;
    const sizes: number[] = [];
    let entries: Buffer;
    try {
      entries = encodeRecordEntries(records, firstSeq, sizes);
    } catch (error) {
      if (!RjobError.hasCode(error, ErrorCode.ValueNotCloneable)) return Promise.reject(error);
      return this.#appendEach(records);
    }
    let last: Promise<number> | number = this.#s.lastSeq;
    let offset = 0;
    for (let i = 0; i < records.length; i++) {
      const entry = entries.subarray(offset, offset + sizes[i]!);
      offset += sizes[i]!;
      const payloadBytes = entry.length - HEADER_BYTES;
      if (payloadBytes > MAX_ENTRY_PAYLOAD_BYTES) {
        last = this.append({ ...records[i]!, stream: 'error', data: tooLarge(payloadBytes) });
        continue;
      }
      if (this.#bound.waiting || !this.#bound.hasRoom(entry.length)) {
        if (this.policy === 'block') {
          last = this.#bound.wait(records[i]!, entry);
          continue;
        }
        this.#bound.dropFor(entry.length);
      }
      last = this.#accept(records[i]!, entry, firstSeq + i);
    }
    if (typeof last !== 'number') return last;
    if (this.#s.pendingBytes >= this.#s.writeBufferBytes) {
      const seq = last;
      return this.#writer.kick().then(() => seq);
    }
    this.#writer.scheduleFlush();
    return Promise.resolve(last);
  }

  async #appendEach(records: readonly JobRecord[]): Promise<number> {
    let seq = this.#s.lastSeq;
    for (const record of records) {
      try {
        seq = await this.append(record);
      } catch (error) {
        if (!RjobError.hasCode(error, ErrorCode.ValueNotCloneable)) throw error;
        seq = await this.append({ ...record, stream: 'error', data: error });
      }
    }
    return seq;
  }

  /**
   * Records from `fromSeq` on (at least `ackedSeq + 1`), in order, within the limits, as the
   * entries they are stored as (@rjob/core's record-entries codec: what a `job.packed` event
   * carries); a `count` of 0 when there is nothing more yet. Where records were lost at the
   * reader's position (deleted by a `drop` spool, or damaged on disk), a warning entry (a
   * {@link SpoolGapRecord} once decoded) stands in their place, numbered as the last one lost.
   */
  read(fromSeq: number, options: SpoolReadOptions = {}): Promise<PackedRecords> {
    return this.#reader.read(fromSeq, options);
  }

  /**
   * Yields what {@link read} gives from `fromSeq` (default: the first unacknowledged record),
   * one read at a time (never empty), and then the new records as they are appended. Ends once
   * the spool is sealed and everything was yielded, when it is closed, or when `options.signal`
   * aborts. It does not acknowledge anything.
   */
  follow(fromSeq?: number, options: SpoolFollowOptions = {}): AsyncGenerator<PackedRecords, void, undefined> {
    return this.#reader.follow(fromSeq, options);
  }

  /**
   * Acknowledges every record up to `uptoSeq`: they are no longer readable, and segments that
   * hold nothing else are deleted. Resolves once the new position is persisted (a restarted agent
   * will not offer those records again). Acknowledging backwards is ignored.
   *
   * With `lazy` (a stream acknowledging batch after batch), the position is persisted within
   * 200 ms, or sooner when a segment is deleted or the spool synced, sealed or closed,
   * and the promise does not wait for it: a rewrite of the meta file per batch cost more than the
   * batch. An agent killed inside that window offers the last acknowledged records again after
   * its restart; a receiver tells them by their sequence numbers.
   */
  ack(uptoSeq: number, options: { lazy?: boolean } = {}): Promise<void> {
    const problem = this.#s.readProblem();
    if (problem) return Promise.reject(problem);
    const target = Math.min(Math.floor(uptoSeq), this.#s.lastSeq);
    if (target <= this.#s.ackedSeq)
      return (options.lazy ? undefined : this.#writer.pumping) ?? Promise.resolve();
    this.#s.ackedSeq = target;
    this.#writer.metaChanged(!options.lazy);
    this.#s.tail.forgetUpTo(target);
    while (this.#s.segments[0]!.bytes > 0 && this.#s.segments[0]!.lastSeq <= this.#s.ackedSeq) {
      this.#discardOldest();
    }
    this.#bound.admit();
    this.#bound.updateWritable();
    if (options.lazy && this.#s.doomed.length === 0) {
      this.#writer.scheduleMeta();
      return Promise.resolve();
    }
    return this.#writer.kick();
  }

  /**
   * Marks the job's output complete: no more appends (ERR_SPOOL_SEALED), followers end once they
   * have read everything, and the data is fsynced. Pending blocked appends are rejected.
   */
  seal(): Promise<void> {
    const problem = this.#s.readProblem();
    if (problem) return Promise.reject(problem);
    if (!this.#s.sealed) {
      this.#s.sealed = true;
      this.#writer.metaChanged(true);
      this.#bound.rejectWaiters(sealedError(this.dir));
      this.#s.fireChange();
    }
    this.#writer.requestSync();
    return this.#writer.kick();
  }

  /** Hands every buffered entry to the OS (it then survives a crash of this process). */
  flush(): Promise<void> {
    if (this.#s.failure) return Promise.reject(this.#s.failure);
    if (this.#writer.idle) return Promise.resolve();
    return this.#writer.kick();
  }

  /** {@link flush}, then fsync, so the records also survive a power loss. */
  sync(): Promise<void> {
    this.#writer.requestSync();
    return this.#writer.kick();
  }

  /**
   * Writes and fsyncs what is buffered, then releases the files. Blocked appends are rejected
   * with ERR_SPOOL_CLOSED and followers end. The data stays on disk for {@link RecordSpool.open}.
   */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#s.closed = true;
    this.#writer.wakeSpace();
    this.#bound.rejectWaiters(closedError(this.dir));
    this.#s.fireChange();
    this.#bound.releaseWritableWaiters();
    this.#writer.stopTimers();
    this.#writer.requestSync();
    this.#closing = (async () => {
      try {
        if (!this.#s.failure) await this.#writer.kick();
      } finally {
        this.#s.released = true;
        await this.#writer.closeFiles();
      }
    })();
    return this.#closing;
  }

  /** Closes the spool and deletes its directory. */
  async destroy(): Promise<void> {
    await this.close().catch(() => {});
    await rm(this.dir, { recursive: true, force: true });
  }

  /**
   * Closes the spool without writing or syncing what is buffered: for a spool whose directory is
   * deleted next (a removed job), where an fsync would only add latency. Appends and reads fail
   * with ERR_SPOOL_CLOSED as after {@link close}.
   */
  discard(): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#s.closed = true;
    this.#s.released = true;
    this.#writer.wakeSpace();
    // The pass running now is the last: nothing is written after it.
    this.#writer.stopPump();
    this.#bound.rejectWaiters(closedError(this.dir));
    this.#writer.rejectWritten(closedError(this.dir));
    this.#s.fireChange();
    this.#bound.releaseWritableWaiters();
    this.#writer.stopTimers();
    this.#closing = (async () => {
      // A pass already running finishes (it holds file handles); none starts after it.
      await this.#writer.finished();
      await this.#writer.closeFiles();
    })();
    return this.#closing;
  }

  /** Takes an encoded entry; `stampedSeq` is the number its header already carries, if any. */
  #accept(record: JobRecord, entry: Buffer, stampedSeq?: number): number {
    const sizeBytes = entry.length;
    let segment = this.#s.segments.at(-1)!;
    if (segment.bytes > 0 && segment.bytes + sizeBytes > this.segmentBytes) segment = this.#rotate();
    const seq = ++this.#s.lastSeq;
    addIndexPoint(segment, seq, segment.bytes);
    if (seq !== stampedSeq) stampEntry(entry, seq);
    segment.pending.push(entry);
    segment.pendingBytes += sizeBytes;
    segment.bytes += sizeBytes;
    segment.lastSeq = seq;
    this.#s.bytes += sizeBytes;
    this.#s.pendingBytes += sizeBytes;
    this.#s.tail.remember(entry, seq);
    if (record.jobId !== this.#s.envelope.jobId || record.location !== this.#s.envelope.location) {
      this.#s.envelope = { jobId: record.jobId, location: record.location };
    }
    this.#s.fireChange();
    this.#bound.updateWritable();
    return seq;
  }

  /** Closes the active segment and starts an empty one after it. */
  #rotate(): Segment {
    this.#s.segments.at(-1)!.sealed = true;
    const next = newSegment(this.dir, this.#s.lastSeq + 1);
    this.#s.segments.push(next);
    this.#writer.markDirty();
    return next;
  }

  /** Deletes the oldest segment (starting a new active one first if it is the only one). */
  #discardOldest(): Segment {
    if (this.#s.segments.length === 1) this.#rotate();
    const oldest = this.#s.segments.shift()!;
    // Its unwritten entries will never be written (nor read): nobody may wait for them.
    if (oldest.lastSeq > this.#s.writtenSeq) this.#writer.wrote(oldest.lastSeq);
    this.#s.tail.forgetUpTo(oldest.lastSeq);
    this.#s.bytes -= oldest.bytes;
    this.#s.pendingBytes -= oldest.pendingBytes;
    this.#s.doomed.push(oldest);
    this.#writer.markDirty();
    return oldest;
  }
}

function tooLarge(payloadBytes: number): RjobError {
  return new RjobError(
    ErrorCode.InvalidArgument,
    `A record of ${payloadBytes} bytes is too large to spool.`,
    {
      details: { sizeBytes: payloadBytes, maxBytes: MAX_ENTRY_PAYLOAD_BYTES },
    },
  );
}
