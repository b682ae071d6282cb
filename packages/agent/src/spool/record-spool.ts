/**
 * A per-job, disk-backed, append-only log of job records: what the agent keeps for a receiver that
 * is disconnected, slow, or gone until the agent restarts.
 *
 * On disk a spool is a directory of segment files (`<firstSeq>.seg`, see segment-format.ts) and a
 * small `spool.meta` (acknowledged position, sealed flag) replaced atomically. Records are numbered
 * by the spool from 1 without gaps; for a job's records that is the same `seq` the JobManager gave
 * them.
 */
import { type FileHandle, mkdir, open, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { encodeRecordEntries, ErrorCode, type JobRecord, RjobError } from '@rjob/core';
import { AgentErrorCode, diskFullError, isSpaceError } from '../errors.js';
import { TEMP_MARKER, writeFileAtomic } from '../fs/atomic-file.js';
import { reportIncident } from '../incidents.js';
import {
  decodeRecord,
  encodeEntry,
  findNextEntry,
  HEADER_BYTES,
  isCompactPayload,
  MAX_ENTRY_PAYLOAD_BYTES,
  parseSegmentFileName,
  readFully,
  SegmentScanner,
  segmentFileName,
  stampEntry,
} from './segment-format.js';

/** What a full spool does with the next append. */
export type SpoolPolicy = 'block' | 'drop';

export const DEFAULT_SPOOL_MAX_BYTES = 256 * 1024 * 1024;
export const DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024;
export const DEFAULT_WRITE_BUFFER_BYTES = 4 * 1024 * 1024;
export const DEFAULT_SYNC_INTERVAL_MS = 1000;

export interface RecordSpoolOptions {
  /** Directory of this spool (one per job). Created 0700 if missing. */
  dir: string;
  /**
   * Bound on the bytes the spool holds on disk (entries of live segments, acknowledged ones
   * included until their segment is deleted). Default 256 MiB ({@link DEFAULT_SPOOL_MAX_BYTES}).
   * `block` takes a record while the spool is below the bound, so it may pass it by one record;
   * `drop` stays within it, except that a single record larger than the bound is still kept.
   */
  maxBytes?: number;
  /**
   * `block` (default): an append that does not fit waits until acknowledgements free space;
   * nothing is lost. `drop`: the oldest unacknowledged records are deleted (whole segments) to make
   * room, and readers get one warning record that says how many they missed.
   */
  policy?: SpoolPolicy;
  /**
   * A segment is closed and a new one started once it would grow past this. Disk is freed a whole
   * segment at a time, so it is capped at a quarter of `maxBytes`. Default 8 MiB.
   */
  segmentBytes?: number;
  /**
   * Appended entries are buffered in memory and written together; past this many buffered bytes
   * `append` waits for the write and `writable` is false. Default 4 MiB: enough to keep taking
   * records while a full segment is fsynced on rotation.
   */
  writeBufferBytes?: number;
  /**
   * Written data is fsynced at most this often (and when a segment is closed, on `seal` and on
   * `close`), never per record. 0 leaves syncing to those moments only. Default 1000.
   */
  syncIntervalMs?: number;
}

export interface SpoolReadOptions {
  /** At most this many records per call. Default 1000. */
  maxRecords?: number;
  /**
   * Stop before the payload bytes returned would pass this; the first record is returned whatever
   * its size, so a reader always progresses. Default 1 MiB.
   */
  maxBytes?: number;
}

export interface SpoolFollowOptions extends SpoolReadOptions {
  /** Ends the iteration (without an error) when aborted. */
  signal?: AbortSignal;
}

/** Records a `drop` spool deleted before anyone acknowledged them. */
export interface SpoolGap {
  droppedRecords: number;
  /** First and last sequence number dropped (from the reader's position). */
  fromSeq: number;
  toSeq: number;
}

/**
 * The warning record a reader gets in place of dropped records. Its `seq` is the last dropped
 * one, so it sits where the gap is, and acknowledging past it consumes it like any record.
 */
export type SpoolGapRecord = JobRecord<string> & { gap: SpoolGap };

export function isSpoolGapRecord(record: JobRecord): record is SpoolGapRecord {
  return typeof (record as Partial<SpoolGapRecord>).gap === 'object';
}

/**
 * Consecutive records as the entries they are stored as (see @rjob/core's record-entries): what a
 * `job.packed` event carries without decoding them.
 */
export interface PackedRecords {
  bytes: Buffer;
  count: number;
  firstSeq: number;
  lastSeq: number;
}

/**
 * One step of {@link RecordSpool.followPacked}: the records packed, or decoded where they cannot be
 * passed on as stored (a `drop` spool's gap warning comes first).
 */
export type SpoolBatch =
  | { packed: PackedRecords; records?: undefined }
  | { records: JobRecord[]; packed?: undefined };

const META_FILE = 'spool.meta';
/** Payload bytes of recent records kept in memory for readers that keep up (see #tail). */
const TAIL_CACHE_BYTES = 4 * 1024 * 1024;
const INDEX_INTERVAL_BYTES = 64 * 1024;
/** How long a lazily acknowledged position may wait to be persisted. */
const LAZY_META_MS = 200;
/** A write that failed for space is retried after this, doubling up to {@link SPACE_RETRY_MAX_MS}. */
const SPACE_RETRY_MIN_MS = 50;
const SPACE_RETRY_MAX_MS = 2000;
const MIN_SEGMENT_BYTES = 4 * 1024;

interface Segment {
  readonly firstSeq: number;
  readonly path: string;
  /** Last sequence number in the segment, buffered entries included (firstSeq - 1 when empty). */
  lastSeq: number;
  /** Size including buffered entries. */
  bytes: number;
  /** What has been handed to the OS: readers never look past it. */
  writtenBytes: number;
  writtenLastSeq: number;
  pending: Buffer[];
  pendingBytes: number;
  handle: FileHandle | undefined;
  /**
   * A read-only handle kept open while the segment exists, so a reader that trails the writer
   * does not open and close the file for every batch. Closed with the segment.
   */
  reader?: Promise<FileHandle> | undefined;
  /** Reads running on {@link reader}. */
  readers?: number;
  /** Close {@link reader} once no read is running on it. */
  dropReader?: boolean;
  /** The file exists on disk. */
  created: boolean;
  /** Takes no more entries; fsynced and closed once written. */
  sealed: boolean;
  /** Sealed, written, fsynced and closed: nothing more to do until it is deleted. */
  settled: boolean;
  unsynced: boolean;
  /**
   * Written by this process: its entries are exactly the buffers we wrote, so reads skip the CRC
   * check (which is there to find a torn or damaged entry in files a previous process left).
   */
  ownWrites: boolean;
  /** Sparse index: `indexSeqs[i]` starts at byte `indexOffsets[i]`; one point per 64 KiB. */
  indexSeqs: number[];
  indexOffsets: number[];
  /** Damaged stretches found in the file (see #holeAt), in file order. */
  holes?: Hole[];
}

/** Damage in a segment: from byte `offset` (where record `seq` should be) to the next intact entry. */
interface Hole {
  offset: number;
  seq: number;
  /** The next intact entry (the end of the data when there is none). */
  nextOffset: number;
  nextSeq: number;
}

interface Waiter {
  record: JobRecord;
  /** The encoded entry, header not yet stamped. */
  entry: Buffer;
  resolve(seq: number): void;
  reject(error: unknown): void;
}

interface Deferred {
  promise: Promise<void>;
  resolve(): void;
}

interface SpoolMeta {
  version: 1;
  ackedSeq: number;
  sealed: boolean;
}

/**
 * A job's records on disk, readable from any sequence number until acknowledged.
 *
 * - `append` numbers and buffers a record; buffered entries reach the OS within one event-loop
 *   turn, and before any `read` returns, so a record a reader has seen survives a SIGKILL of the
 *   agent. fsync is batched (`syncIntervalMs`).
 * - `read` / `follow` return records from a sequence number; `ack` frees everything up to one.
 * - Memory stays bounded: one write buffer, a read-ahead buffer per read, and a sparse index.
 */
export class RecordSpool {
  readonly dir: string;
  readonly policy: SpoolPolicy;
  readonly maxBytes: number;
  readonly segmentBytes: number;
  readonly #writeBufferBytes: number;
  readonly #syncIntervalMs: number;

  #segments: Segment[] = [];
  #doomed: Segment[] = [];
  #lastSeq = 0;
  #ackedSeq = 0;
  #bytes = 0;
  #pendingBytes = 0;
  #droppedRecords = 0;
  #sealed = false;
  #closed = false;
  #failure: RjobError | undefined;
  #envelope = { jobId: 0, location: '' };

  /**
   * The records appended last, as objects, so a reader that keeps up with the writer (the
   * usual case: a client attached and reading) gets them without reading and decoding them back
   * from disk. Contiguous from #tailFirstSeq; bounded by {@link TAIL_CACHE_BYTES} of payload; only
   * records whose compact form (text or bytes) round-trips exactly (see segment-format.ts) go in.
   */
  #tail: JobRecord[] = [];
  /** The segment whose read handle stays open between reads (see #acquireReader). */
  #readSegmentNow: Segment | undefined;
  /** The same records' entries (header included), as written: for packed reads. */
  #tailEntries: Buffer[] = [];
  #tailSizes: number[] = [];
  #tailHead = 0;
  #tailFirstSeq = 1;
  #tailBytes = 0;
  /** Every record up to here has been handed to the OS (the pump wrote it). */
  #writtenSeq = 0;
  #writtenWaiters: Array<{ seq: number; resolve(): void; reject(error: unknown): void }> = [];

  #waiters: Waiter[] = [];
  #change: Deferred | undefined;
  #writableListeners = new Set<() => void>();
  #writableWaiters: Deferred | undefined;
  #wasWritable = true;

  #dirty = false;
  #pumping: Promise<void> | undefined;
  #flushScheduled = false;
  #metaDirty = false;
  /** The meta file must be rewritten on the next pass (not only eventually: see `ack`'s `lazy`). */
  #metaDue = false;
  #metaTimer: NodeJS.Timeout | undefined;
  /** The fsync pass running now, if any (see #syncPass). */
  #syncLane: Promise<void> | undefined;
  #dirDirty = false;
  #syncDue = false;
  #syncTimer: NodeJS.Timeout | undefined;
  #closing: Promise<void> | undefined;
  /** Closed and every file handle released: the pump must not reopen anything. */
  #released = false;
  /** Since when writes fail for space (ENOSPC, EDQUOT) and the pump retries them; see #pumpLoop. */
  #spacePausedSince: Date | undefined;
  #spaceRetryMs = SPACE_RETRY_MIN_MS;
  /** Ends the current wait between retries early (close, discard). */
  #spaceWake: (() => void) | undefined;

  private constructor(options: RecordSpoolOptions) {
    this.dir = options.dir;
    this.policy = options.policy ?? 'block';
    this.maxBytes = positive(options.maxBytes, DEFAULT_SPOOL_MAX_BYTES, 'maxBytes');
    const segmentBytes = positive(options.segmentBytes, DEFAULT_SEGMENT_BYTES, 'segmentBytes');
    this.segmentBytes = Math.max(MIN_SEGMENT_BYTES, Math.min(segmentBytes, Math.floor(this.maxBytes / 4)));
    this.#writeBufferBytes = positive(
      options.writeBufferBytes,
      DEFAULT_WRITE_BUFFER_BYTES,
      'writeBufferBytes',
    );
    this.#syncIntervalMs = options.syncIntervalMs ?? DEFAULT_SYNC_INTERVAL_MS;
    if (this.policy !== 'block' && this.policy !== 'drop') {
      throw new RjobError(ErrorCode.InvalidArgument, `Unknown spool policy "${String(this.policy)}".`);
    }
  }

  /**
   * Opens (or creates) the spool in `options.dir`. After a crash this recovers every complete
   * entry and cuts off a torn tail, so appends continue right after the last intact record.
   */
  static async open(options: RecordSpoolOptions): Promise<RecordSpool> {
    const spool = new RecordSpool(options);
    try {
      await spool.#recover();
    } catch (error) {
      if (isSpaceError(error)) throw diskFullError(`the spool ${spool.dir}`, error);
      throw error;
    }
    return spool;
  }

  /** Sequence number of the last record appended (0 when none). */
  get lastSeq(): number {
    return this.#lastSeq;
  }

  /** Everything up to here was acknowledged and is no longer readable. */
  get ackedSeq(): number {
    return this.#ackedSeq;
  }

  /** Bytes held on disk, including entries still buffered for writing. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Records deleted by the `drop` policy since this spool was opened. */
  get droppedRecords(): number {
    return this.#droppedRecords;
  }

  /** True once {@link seal} was called (here or before a restart): the job writes no more. */
  get sealed(): boolean {
    return this.#sealed;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * False while an append would have to wait (the `block` bound is reached, or the write buffer is
   * full) or cannot happen at all. A producer that can pause polls this after each append and
   * resumes from {@link onWritable}.
   */
  get writable(): boolean {
    return (
      !this.#closed &&
      !this.#sealed &&
      !this.#failure &&
      this.#waiters.length === 0 &&
      this.#pendingBytes < this.#writeBufferBytes &&
      (this.policy === 'drop' || this.#bytes < this.maxBytes)
    );
  }

  /** Calls `listener` each time {@link writable} turns true again. Returns an unsubscribe function. */
  onWritable(listener: () => void): () => void {
    this.#writableListeners.add(listener);
    return () => this.#writableListeners.delete(listener);
  }

  /** Resolves when {@link writable} is true; rejects if the spool is closed, sealed or failed. */
  waitWritable(): Promise<void> {
    const problem = this.#appendProblem();
    if (problem) return Promise.reject(problem);
    if (this.writable) return Promise.resolve();
    this.#writableWaiters ??= deferred();
    return this.#writableWaiters.promise.then(() => {
      const after = this.#appendProblem();
      if (after) throw after;
    });
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
    const problem = this.#appendProblem();
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
    if (this.#waiters.length > 0 || !this.#hasRoom(sizeBytes)) {
      if (this.policy === 'block') {
        return new Promise((resolve, reject) => {
          this.#waiters.push({ record, entry, resolve, reject });
          this.#updateWritable();
        });
      }
      this.#dropFor(sizeBytes);
    }
    const seq = this.#accept(record, entry);
    if (this.#pendingBytes >= this.#writeBufferBytes) return this.#kick().then(() => seq);
    this.#scheduleFlush();
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
    const problem = this.#appendProblem();
    if (problem) return Promise.reject(problem);
    if (records.length === 0) return Promise.resolve(this.#lastSeq);
    const firstSeq = this.#lastSeq + 1;
    const sizes: number[] = [];
    let entries: Buffer;
    try {
      entries = encodeRecordEntries(records, firstSeq, sizes);
    } catch (error) {
      if (!RjobError.hasCode(error, ErrorCode.ValueNotCloneable)) return Promise.reject(error);
      return this.#appendEach(records);
    }
    let last: Promise<number> | number = this.#lastSeq;
    let offset = 0;
    for (let i = 0; i < records.length; i++) {
      const entry = entries.subarray(offset, offset + sizes[i]!);
      offset += sizes[i]!;
      const payloadBytes = entry.length - HEADER_BYTES;
      if (payloadBytes > MAX_ENTRY_PAYLOAD_BYTES) {
        last = this.append({ ...records[i]!, stream: 'error', data: tooLarge(payloadBytes) });
        continue;
      }
      if (this.#waiters.length > 0 || !this.#hasRoom(entry.length)) {
        if (this.policy === 'block') {
          last = new Promise((resolve, reject) => {
            this.#waiters.push({ record: records[i]!, entry, resolve, reject });
            this.#updateWritable();
          });
          continue;
        }
        this.#dropFor(entry.length);
      }
      last = this.#accept(records[i]!, entry, firstSeq + i);
    }
    if (typeof last !== 'number') return last;
    if (this.#pendingBytes >= this.#writeBufferBytes) {
      const seq = last;
      return this.#kick().then(() => seq);
    }
    this.#scheduleFlush();
    return Promise.resolve(last);
  }

  async #appendEach(records: readonly JobRecord[]): Promise<number> {
    let seq = this.#lastSeq;
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
   * Records from `fromSeq` on (at least `ackedSeq + 1`), in order, within the limits. Returns an
   * empty array when there is nothing more yet. If a `drop` spool deleted records at the reader's
   * position, the first record returned is a {@link SpoolGapRecord} that counts them.
   */
  read(fromSeq: number, options: SpoolReadOptions = {}): Promise<JobRecord[]> {
    return this.#readWhenWritten(() => this.#readWritten(fromSeq, options));
  }

  /** Runs a read once everything appended is written, again if a segment vanished under it. */
  async #readWhenWritten<T>(readOnce: () => Promise<T>): Promise<T> {
    const problem = this.#readProblem();
    if (problem) throw problem;
    // Only what is appended but not yet handed to the OS needs the pump; waiting for a whole pass
    // (an fsync, a meta rewrite) would put disk latency on every read of a live job.
    // While the disk is full, what is not written cannot be: read what is.
    if (this.#writtenSeq < this.#lastSeq && !this.#spacePausedSince) await this.#untilWritten(this.#lastSeq);
    for (let attempt = 0; ; attempt++) {
      try {
        return await readOnce();
      } catch (error) {
        // A segment deleted by an ack or a drop while we read it: start over from the new state.
        if ((error as NodeJS.ErrnoException).code === 'ENOENT' && attempt < 8) continue;
        throw error;
      }
    }
  }

  /**
   * Yields records from `fromSeq` (default: the first unacknowledged one) and then each new record
   * as it is appended. Ends once the spool is sealed and everything was yielded, when it is
   * closed, or when `options.signal` aborts. It does not acknowledge anything.
   */
  async *follow(
    fromSeq?: number,
    options: SpoolFollowOptions = {},
  ): AsyncGenerator<JobRecord, void, undefined> {
    for await (const batch of this.followBatches(fromSeq, options)) {
      for (const record of batch) {
        yield record;
        if (options.signal?.aborted) return;
      }
    }
  }

  /**
   * {@link follow} a read at a time: each batch is what one {@link read} returned (within its
   * limits, never empty). Consumers that forward records in bulk (the session's subscription pump)
   * pay the per-step costs once per batch instead of once per record.
   */
  async *followBatches(
    fromSeq?: number,
    options: SpoolFollowOptions = {},
  ): AsyncGenerator<JobRecord[], void, undefined> {
    for await (const batch of this.#follow(fromSeq, options, false)) yield batch.records!;
  }

  /**
   * {@link followBatches} with each batch as the entries it is stored as, for a consumer that
   * passes records on without looking at them (a `job.packed` event). Where the spool cannot give
   * them that way (a `drop` gap at the reader's position) a batch comes decoded instead.
   */
  followPacked(
    fromSeq?: number,
    options: SpoolFollowOptions = {},
  ): AsyncGenerator<SpoolBatch, void, undefined> {
    return this.#follow(fromSeq, options, true);
  }

  async *#follow(
    fromSeq: number | undefined,
    options: SpoolFollowOptions,
    packed: boolean,
  ): AsyncGenerator<SpoolBatch, void, undefined> {
    let next = fromSeq ?? this.#ackedSeq + 1;
    const { signal } = options;
    while (!signal?.aborted && !this.#closed) {
      // Taken before reading, so an append that lands during the read still wakes us.
      const changed = this.#nextChange();
      let batch: SpoolBatch | undefined;
      try {
        const bytes = packed ? await this.readPacked(next, options) : undefined;
        if (bytes) {
          if (bytes.count > 0) batch = { packed: bytes };
        } else {
          const records = await this.read(next, options);
          if (records.length > 0) batch = { records };
        }
      } catch (error) {
        if (RjobError.hasCode(error, AgentErrorCode.SpoolClosed)) return;
        throw error;
      }
      if (batch) {
        next = (batch.packed ? batch.packed.lastSeq : batch.records.at(-1)!.seq) + 1;
        yield batch;
        if (signal?.aborted) return;
        continue;
      }
      if (this.#sealed && next > this.#lastSeq) return;
      await untilAborted(changed, signal);
    }
  }

  /**
   * As {@link read}, but the records come as the entries they are stored as (a `count` of 0 when
   * there is nothing more yet). Undefined when they cannot come that way: a `drop` spool deleted
   * records at `fromSeq`, and {@link read} reports that gap.
   */
  readPacked(fromSeq: number, options: SpoolReadOptions = {}): Promise<PackedRecords | undefined> {
    return this.#readWhenWritten(() => this.#readWrittenPacked(fromSeq, options));
  }

  /**
   * Acknowledges every record up to `uptoSeq`: they are no longer readable, and segments that
   * hold nothing else are deleted. Resolves once the new position is persisted (a restarted agent
   * will not offer those records again). Acknowledging backwards is ignored.
   *
   * With `lazy` (a stream acknowledging batch after batch), the position is persisted within
   * {@link LAZY_META_MS}, or sooner when a segment is deleted or the spool synced, sealed or closed,
   * and the promise does not wait for it: a rewrite of the meta file per batch cost more than the
   * batch. An agent killed inside that window offers the last acknowledged records again after
   * its restart; a receiver tells them by their sequence numbers.
   */
  ack(uptoSeq: number, options: { lazy?: boolean } = {}): Promise<void> {
    const problem = this.#readProblem();
    if (problem) return Promise.reject(problem);
    const target = Math.min(Math.floor(uptoSeq), this.#lastSeq);
    if (target <= this.#ackedSeq) return (options.lazy ? undefined : this.#pumping) ?? Promise.resolve();
    this.#ackedSeq = target;
    this.#metaDirty = true;
    if (!options.lazy) this.#metaDue = true;
    this.#forgetTailUpTo(target);
    while (this.#segments[0]!.bytes > 0 && this.#segments[0]!.lastSeq <= this.#ackedSeq) {
      this.#discardOldest();
    }
    this.#admitWaiters();
    this.#updateWritable();
    if (options.lazy && this.#doomed.length === 0) {
      this.#scheduleMeta();
      return Promise.resolve();
    }
    return this.#kick();
  }

  #scheduleMeta(): void {
    if (this.#metaTimer || this.#closed) return;
    this.#metaTimer = setTimeout(() => {
      this.#metaTimer = undefined;
      this.#metaDue = true;
      this.#kick().catch(() => {});
    }, LAZY_META_MS);
    this.#metaTimer.unref();
  }

  /**
   * Marks the job's output complete: no more appends (ERR_SPOOL_SEALED), followers end once they
   * have read everything, and the data is fsynced. Pending blocked appends are rejected.
   */
  seal(): Promise<void> {
    const problem = this.#readProblem();
    if (problem) return Promise.reject(problem);
    if (!this.#sealed) {
      this.#sealed = true;
      this.#metaDirty = true;
      this.#metaDue = true;
      this.#rejectWaiters(sealedError(this.dir));
      this.#fireChange();
    }
    this.#syncDue = true;
    return this.#kick();
  }

  /** Hands every buffered entry to the OS (it then survives a crash of this process). */
  flush(): Promise<void> {
    if (this.#failure) return Promise.reject(this.#failure);
    if (!this.#pumping && this.#pendingBytes === 0 && !this.#metaDirty && this.#doomed.length === 0) {
      return Promise.resolve();
    }
    return this.#kick();
  }

  /** {@link flush}, then fsync, so the records also survive a power loss. */
  sync(): Promise<void> {
    this.#syncDue = true;
    return this.#kick();
  }

  /**
   * Writes and fsyncs what is buffered, then releases the files. Blocked appends are rejected
   * with ERR_SPOOL_CLOSED and followers end. The data stays on disk for {@link RecordSpool.open}.
   */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closed = true;
    this.#spaceWake?.();
    this.#rejectWaiters(closedError(this.dir));
    this.#fireChange();
    this.#writableWaiters?.resolve();
    this.#writableWaiters = undefined;
    if (this.#syncTimer) clearTimeout(this.#syncTimer);
    this.#syncTimer = undefined;
    if (this.#metaTimer) clearTimeout(this.#metaTimer);
    this.#metaTimer = undefined;
    this.#syncDue = true;
    this.#closing = (async () => {
      try {
        if (!this.#failure) await this.#kick();
      } finally {
        this.#released = true;
        for (const segment of [...this.#segments, ...this.#doomed]) {
          await segment.handle?.close().catch(() => {});
          segment.handle = undefined;
          dropReader(segment);
        }
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
    this.#closed = true;
    this.#released = true;
    this.#spaceWake?.();
    // The pass running now is the last: nothing is written after it.
    this.#dirty = false;
    this.#rejectWaiters(closedError(this.dir));
    const written = this.#writtenWaiters;
    this.#writtenWaiters = [];
    for (const waiter of written) waiter.reject(closedError(this.dir));
    this.#fireChange();
    this.#writableWaiters?.resolve();
    this.#writableWaiters = undefined;
    if (this.#syncTimer) clearTimeout(this.#syncTimer);
    this.#syncTimer = undefined;
    if (this.#metaTimer) clearTimeout(this.#metaTimer);
    this.#metaTimer = undefined;
    this.#closing = (async () => {
      // A pass already running finishes (it holds file handles); none starts after it.
      await this.#pumping?.catch(() => {});
      await this.#syncLane?.catch(() => {});
      for (const segment of [...this.#segments, ...this.#doomed]) {
        await segment.handle?.close().catch(() => {});
        segment.handle = undefined;
        dropReader(segment);
      }
    })();
    return this.#closing;
  }

  // ---------------------------------------------------------------------------------------------
  // Recovery

  async #recover(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const names = await readdir(this.dir);
    for (const name of names) {
      if (name.includes(TEMP_MARKER)) await rm(join(this.dir, name), { force: true });
    }
    const meta = await this.#readMeta();
    const firstSeqs = names
      .map(parseSegmentFileName)
      .filter((seq): seq is number => seq !== undefined)
      .sort((a, b) => a - b);
    for (let i = 0; i < firstSeqs.length - 1; i++) {
      const segment = newSegment(this.dir, firstSeqs[i]!);
      const size = (await stat(segment.path)).size;
      segment.lastSeq = segment.writtenLastSeq = firstSeqs[i + 1]! - 1;
      segment.bytes = segment.writtenBytes = size;
      segment.created = segment.sealed = segment.settled = true;
      segment.ownWrites = false;
      this.#segments.push(segment);
    }
    const lastFirstSeq = firstSeqs.at(-1);
    if (lastFirstSeq === undefined) {
      this.#segments.push(newSegment(this.dir, Math.max(1, meta.ackedSeq + 1)));
    } else {
      const recovered = newSegment(this.dir, lastFirstSeq);
      // Appends go on in this file, but what is in it already came from a previous process.
      recovered.ownWrites = false;
      this.#segments.push(await this.#recoverTail(recovered));
    }
    const tail = this.#segments.at(-1)!;
    this.#lastSeq = tail.lastSeq;
    this.#writtenSeq = this.#lastSeq;
    this.#tailFirstSeq = this.#lastSeq + 1;
    this.#ackedSeq = Math.min(meta.ackedSeq, this.#lastSeq);
    this.#sealed = meta.sealed;
    this.#bytes = this.#segments.reduce((sum, segment) => sum + segment.bytes, 0);
    this.#wasWritable = this.writable;
  }

  /** Scans the last segment, keeps its intact prefix and truncates whatever follows. */
  async #recoverTail(segment: Segment): Promise<Segment> {
    const handle = await open(segment.path, 'r+');
    try {
      const size = (await handle.stat()).size;
      const scanner = new SegmentScanner(handle, size);
      let offset = 0;
      let seq = segment.firstSeq;
      let lastOffset = -1;
      for (;;) {
        const entry = await scanner.entryAt(offset, seq);
        if (entry) {
          addIndexPoint(segment, entry.seq, entry.offset);
          lastOffset = offset;
          offset = entry.end;
          seq++;
          continue;
        }
        if (offset + HEADER_BYTES > size) break;
        // Damage, or the torn end of the last write: if an intact entry follows, only the
        // records in between are lost (each entry is at least a header long, which bounds the
        // numbers that can still come).
        const maxSeq = seq - 1 + Math.ceil((size - offset) / HEADER_BYTES);
        const next = await findNextEntry(handle, offset + 1, size, seq - 1, maxSeq);
        if (!next) break;
        recordHole(segment, { offset, seq, nextOffset: next.offset, nextSeq: next.seq }, true);
        offset = next.offset;
        seq = next.seq;
      }
      if (offset < size) {
        await handle.truncate(offset);
        reportIncident({
          kind: 'damaged',
          code: AgentErrorCode.StateDamaged,
          subject: `spool segment ${segment.path}`,
          detail: `its last ${size - offset} byte(s) are not a complete record (a torn or damaged end): cut off, the records before them are kept`,
        });
      }
      segment.lastSeq = segment.writtenLastSeq = seq - 1;
      segment.bytes = segment.writtenBytes = offset;
      segment.created = true;
      const last = lastOffset >= 0 ? await scanner.entryAt(lastOffset, seq - 1) : undefined;
      if (last) {
        const record = decodeRecord(last.payload, seq - 1);
        this.#envelope = { jobId: record.jobId, location: record.location };
      }
      return segment;
    } finally {
      await handle.close();
    }
  }

  async #readMeta(): Promise<SpoolMeta> {
    const path = join(this.dir, META_FILE);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch {
      // Missing: a fresh spool.
      return { version: 1, ackedSeq: 0, sealed: false };
    }
    try {
      const meta = JSON.parse(text) as Partial<SpoolMeta>;
      if (typeof meta !== 'object' || meta === null) throw new Error('not an object');
      return {
        version: 1,
        ackedSeq: Number.isSafeInteger(meta.ackedSeq) && meta.ackedSeq! > 0 ? meta.ackedSeq! : 0,
        sealed: meta.sealed === true,
      };
    } catch {
      // Damaged: nothing acknowledged. The worst case is that a receiver is offered records
      // again, which it recognises by their sequence numbers.
      reportIncident({
        kind: 'damaged',
        code: AgentErrorCode.StateDamaged,
        subject: `spool meta ${path}`,
        detail:
          'unreadable: its acknowledged position is reset, so records already received may be offered again',
      });
      return { version: 1, ackedSeq: 0, sealed: false };
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Appending, dropping, acknowledging (in-memory state; the pump catches the disk up)

  #appendProblem(): RjobError | undefined {
    if (this.#failure) return this.#failure;
    if (this.#closed) return closedError(this.dir);
    if (this.#sealed) return sealedError(this.dir);
    return undefined;
  }

  #readProblem(): RjobError | undefined {
    if (this.#failure) return this.#failure;
    if (this.#closed) return closedError(this.dir);
    return undefined;
  }

  /**
   * `block` takes a record while the spool is under its bound (so it can pass it by at most one
   * record), which keeps `writable` an exact prediction of whether the next append waits. `drop`
   * makes the record fit, unless it alone is larger than the bound.
   */
  #hasRoom(sizeBytes: number): boolean {
    if (this.policy === 'block') return this.#bytes < this.maxBytes;
    return this.#bytes === 0 || this.#bytes + sizeBytes <= this.maxBytes;
  }

  /** Takes an encoded entry; `stampedSeq` is the number its header already carries, if any. */
  #accept(record: JobRecord, entry: Buffer, stampedSeq?: number): number {
    const sizeBytes = entry.length;
    let segment = this.#segments.at(-1)!;
    if (segment.bytes > 0 && segment.bytes + sizeBytes > this.segmentBytes) segment = this.#rotate();
    const seq = ++this.#lastSeq;
    addIndexPoint(segment, seq, segment.bytes);
    if (seq !== stampedSeq) stampEntry(entry, seq);
    segment.pending.push(entry);
    segment.pendingBytes += sizeBytes;
    segment.bytes += sizeBytes;
    segment.lastSeq = seq;
    this.#bytes += sizeBytes;
    this.#pendingBytes += sizeBytes;
    this.#remember(record, entry, seq);
    if (record.jobId !== this.#envelope.jobId || record.location !== this.#envelope.location) {
      this.#envelope = { jobId: record.jobId, location: record.location };
    }
    this.#fireChange();
    this.#updateWritable();
    return seq;
  }

  /** Closes the active segment and starts an empty one after it. */
  #rotate(): Segment {
    this.#segments.at(-1)!.sealed = true;
    const next = newSegment(this.dir, this.#lastSeq + 1);
    this.#segments.push(next);
    this.#dirty = true;
    return next;
  }

  /** Deletes the oldest segment (starting a new active one first if it is the only one). */
  #discardOldest(): Segment {
    if (this.#segments.length === 1) this.#rotate();
    const oldest = this.#segments.shift()!;
    // Its unwritten entries will never be written (nor read): nobody may wait for them.
    if (oldest.lastSeq > this.#writtenSeq) this.#wrote(oldest.lastSeq);
    this.#forgetTailUpTo(oldest.lastSeq);
    this.#bytes -= oldest.bytes;
    this.#pendingBytes -= oldest.pendingBytes;
    this.#doomed.push(oldest);
    this.#dirty = true;
    return oldest;
  }

  /** The `drop` policy: deletes the oldest segments until `sizeBytes` fits. */
  #dropFor(sizeBytes: number): void {
    while (!this.#hasRoom(sizeBytes) && this.#bytes > 0) {
      const dropped = this.#discardOldest();
      const unacked = dropped.lastSeq - Math.max(dropped.firstSeq, this.#ackedSeq + 1) + 1;
      if (unacked > 0) this.#droppedRecords += unacked;
    }
  }

  /** Lets blocked appends in, in order, as far as the freed space allows. */
  #admitWaiters(): void {
    let admitted = false;
    while (this.#waiters.length > 0) {
      const waiter = this.#waiters[0]!;
      if (!this.#hasRoom(waiter.entry.length)) break;
      this.#waiters.shift();
      waiter.resolve(this.#accept(waiter.record, waiter.entry));
      admitted = true;
    }
    if (admitted) this.#scheduleFlush();
  }

  #rejectWaiters(error: RjobError): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const waiter of waiters) waiter.reject(error);
  }

  #nextChange(): Promise<void> {
    this.#change ??= deferred();
    return this.#change.promise;
  }

  #fireChange(): void {
    const change = this.#change;
    this.#change = undefined;
    change?.resolve();
  }

  #updateWritable(): void {
    const writable = this.writable;
    if (writable && !this.#wasWritable) {
      this.#wasWritable = true;
      this.#writableWaiters?.resolve();
      this.#writableWaiters = undefined;
      for (const listener of [...this.#writableListeners]) {
        try {
          listener();
        } catch {
          // A listener's bug must not wedge the spool.
        }
      }
    }
    this.#wasWritable = writable;
  }

  // ---------------------------------------------------------------------------------------------
  // Reading

  async #readWritten(fromSeq: number, options: SpoolReadOptions): Promise<JobRecord[]> {
    const maxRecords = Math.max(1, options.maxRecords ?? 1000);
    const maxBytes = options.maxBytes ?? 1024 * 1024;
    const segments = this.#segments.slice();
    let start = Math.max(Math.floor(fromSeq), this.#ackedSeq + 1, 1);
    let gap: SpoolGap | undefined;
    const firstSeq = segments[0]!.firstSeq;
    if (start < firstSeq) {
      gap = { droppedRecords: firstSeq - start, fromSeq: start, toSeq: firstSeq - 1 };
      start = firstSeq;
    }
    if (!gap) {
      const cached = this.#readTail(start, maxRecords, maxBytes);
      if (cached) return cached;
    }
    const out: JobRecord[] = [];
    const budget = { records: maxRecords - (gap ? 1 : 0), bytes: maxBytes };
    for (const segment of segments) {
      if (budget.records <= 0) break;
      const writtenLastSeq = segment.writtenLastSeq;
      if (writtenLastSeq < start) {
        if (segment.lastSeq > writtenLastSeq) break;
        continue;
      }
      const full = await this.#readSegment(segment, start, budget, out);
      if (full || segment.lastSeq > writtenLastSeq) break;
      start = writtenLastSeq + 1;
    }
    if (gap) out.unshift(gapRecord(gap, out[0] ?? this.#envelope));
    return out;
  }

  /**
   * Records from `start` out of the tail cache, within the limits and only as far as written (a
   * record a reader has seen must survive a SIGKILL); undefined when `start` is not in it.
   */
  #readTail(start: number, maxRecords: number, maxBytes: number): JobRecord[] | undefined {
    const first = this.#tailFirstSeq;
    const end = Math.min(first + this.#tail.length - this.#tailHead, this.#writtenSeq + 1);
    if (start < first || start >= end) return undefined;
    const out: JobRecord[] = [];
    let bytes = 0;
    for (let seq = start; seq < end && out.length < maxRecords; seq++) {
      const index = this.#tailHead + (seq - first);
      const size = this.#tailSizes[index]!;
      if (out.length > 0 && bytes + size > maxBytes) break;
      const record = this.#tail[index]!;
      // Each reader gets its own bytes, as decoding the entry would give it.
      out.push(Buffer.isBuffer(record.data) ? { ...record, data: Buffer.from(record.data) } : record);
      bytes += size;
    }
    return out;
  }

  #remember(record: JobRecord, entry: Buffer, seq: number): void {
    // Read in place: a view of the payload per record would only feed the garbage collector.
    const payloadBytes = entry.length - HEADER_BYTES;
    const cacheable = payloadBytes <= TAIL_CACHE_BYTES && isCompactPayload(entry, HEADER_BYTES);
    if (!cacheable || seq !== this.#tailFirstSeq + this.#tail.length - this.#tailHead) {
      // Something else, or the run was broken: a new run starts with this record or after it.
      this.#tail = [];
      this.#tailEntries = [];
      this.#tailSizes = [];
      this.#tailHead = 0;
      this.#tailBytes = 0;
      this.#tailFirstSeq = cacheable ? seq : seq + 1;
      if (!cacheable) return;
    }
    // A copy with the spool's numbering, exactly what decoding the entry would give.
    this.#tail.push({
      stream: record.stream,
      data: record.data,
      seq,
      timeMs: record.timeMs,
      jobId: record.jobId,
      location: record.location,
    });
    this.#tailEntries.push(entry);
    this.#tailSizes.push(payloadBytes);
    this.#tailBytes += payloadBytes;
    while (this.#tailBytes > TAIL_CACHE_BYTES) this.#dropTailHead();
  }

  #forgetTailUpTo(seq: number): void {
    while (this.#tailHead < this.#tail.length && this.#tailFirstSeq <= seq) this.#dropTailHead();
  }

  #dropTailHead(): void {
    this.#tailBytes -= this.#tailSizes[this.#tailHead]!;
    this.#tail[this.#tailHead] = undefined as unknown as JobRecord;
    this.#tailEntries[this.#tailHead] = undefined as unknown as Buffer;
    this.#tailHead++;
    this.#tailFirstSeq++;
    if (this.#tailHead > 1024 && this.#tailHead * 2 > this.#tail.length) {
      this.#tail = this.#tail.slice(this.#tailHead);
      this.#tailEntries = this.#tailEntries.slice(this.#tailHead);
      this.#tailSizes = this.#tailSizes.slice(this.#tailHead);
      this.#tailHead = 0;
    }
  }

  /** Appends records ≥ `start` from one segment to `out`; true when a limit was reached. */
  async #readSegment(
    segment: Segment,
    start: number,
    budget: { records: number; bytes: number },
    out: JobRecord[],
  ): Promise<boolean> {
    // Snapshot: the pump may write more while we read, and we must not read past what it finished.
    const endOffset = segment.writtenBytes;
    const lastSeq = segment.writtenLastSeq;
    let { seq, offset } = indexPointBefore(segment, start, endOffset);
    const handle = await this.#acquireReader(segment);
    try {
      const scanner = new SegmentScanner(handle, endOffset);
      const verify = !segment.ownWrites;
      while (seq <= lastSeq) {
        const entry = await scanner.entryAt(offset, seq, verify);
        if (!entry) {
          const hole = await this.#holeAt(segment, handle, offset, seq, endOffset, lastSeq);
          const lostTo = hole.nextSeq - 1;
          if (lostTo >= start) {
            if (budget.records <= 0) return true;
            const fromSeq = Math.max(seq, start);
            const gap = { droppedRecords: lostTo - fromSeq + 1, fromSeq, toSeq: lostTo };
            out.push(gapRecord(gap, out.at(-1) ?? this.#envelope, segment.path));
            budget.records--;
          }
          offset = hole.nextOffset;
          seq = hole.nextSeq;
          continue;
        }
        addIndexPoint(segment, seq, offset);
        if (seq >= start) {
          if (budget.records <= 0) return true;
          if (out.length > 0 && entry.payload.length > budget.bytes) return true;
          // decodeRecord copies what it keeps: the payload is a view of the scanner's buffer.
          out.push(decodeRecord(entry.payload, seq));
          budget.records--;
          budget.bytes -= entry.payload.length;
        }
        offset = entry.end;
        seq++;
      }
      return budget.records <= 0;
    } finally {
      this.#releaseReader(segment);
    }
  }

  async #readWrittenPacked(fromSeq: number, options: SpoolReadOptions): Promise<PackedRecords | undefined> {
    const maxRecords = Math.max(1, options.maxRecords ?? 1000);
    const maxBytes = options.maxBytes ?? 1024 * 1024;
    const segments = this.#segments.slice();
    const start = Math.max(Math.floor(fromSeq), this.#ackedSeq + 1, 1);
    if (start < segments[0]!.firstSeq) return undefined;
    const cached = this.#readTailPacked(start, maxRecords, maxBytes);
    if (cached) return cached;
    for (const segment of segments) {
      const writtenLastSeq = segment.writtenLastSeq;
      if (writtenLastSeq < start) {
        if (segment.lastSeq > writtenLastSeq) break;
        continue;
      }
      return this.#readSegmentPacked(segment, start, maxRecords, maxBytes);
    }
    return { bytes: Buffer.alloc(0), count: 0, firstSeq: start, lastSeq: start - 1 };
  }

  /** {@link #readTail} as entries. */
  #readTailPacked(start: number, maxRecords: number, maxBytes: number): PackedRecords | undefined {
    const first = this.#tailFirstSeq;
    const end = Math.min(first + this.#tail.length - this.#tailHead, this.#writtenSeq + 1);
    if (start < first || start >= end) return undefined;
    const entries: Buffer[] = [];
    let bytes = 0;
    let payloadBytes = 0;
    for (let seq = start; seq < end && entries.length < maxRecords; seq++) {
      const index = this.#tailHead + (seq - first);
      const size = this.#tailSizes[index]!;
      if (entries.length > 0 && payloadBytes + size > maxBytes) break;
      const entry = this.#tailEntries[index]!;
      entries.push(entry);
      bytes += entry.length;
      payloadBytes += size;
    }
    return {
      bytes: Buffer.concat(entries, bytes),
      count: entries.length,
      firstSeq: start,
      lastSeq: start + entries.length - 1,
    };
  }

  /**
   * Entries from `start` out of one segment, read with one read call into a buffer that is then
   * handed on as it is: the headers are walked (and, for files a previous process wrote, the CRCs
   * checked), the records are not decoded.
   */
  async #readSegmentPacked(
    segment: Segment,
    start: number,
    maxRecords: number,
    maxBytes: number,
  ): Promise<PackedRecords | undefined> {
    const endOffset = segment.writtenBytes;
    const lastSeq = segment.writtenLastSeq;
    let { seq, offset } = indexPointBefore(segment, start, endOffset);
    const verify = !segment.ownWrites;
    const handle = await this.#acquireReader(segment);
    try {
      // Enough for the skip up to `start` (at most one index interval) and a full batch.
      let want = Math.min(endOffset - offset, maxBytes + INDEX_INTERVAL_BYTES + 64 * HEADER_BYTES);
      for (;;) {
        const chunk = Buffer.allocUnsafe(want);
        const got = await readFully(handle, chunk, want, offset);
        let at = 0;
        let from = -1;
        let count = 0;
        let payloads = 0;
        let needed = 0;
        let damagedAt = -1;
        while (seq <= lastSeq) {
          if (at + HEADER_BYTES > got) {
            needed = HEADER_BYTES;
            break;
          }
          const payloadBytes = chunk.readUInt32LE(at);
          const entrySeq = chunk.readUInt32LE(at + 8) + chunk.readUInt32LE(at + 12) * 0x1_0000_0000;
          const end = at + HEADER_BYTES + payloadBytes;
          if (
            entrySeq !== seq ||
            payloadBytes > MAX_ENTRY_PAYLOAD_BYTES ||
            offset + end > endOffset ||
            (end <= got && verify && crc32(chunk.subarray(at + 8, end)) !== chunk.readUInt32LE(at + 4))
          ) {
            damagedAt = offset + at;
            break;
          }
          if (end > got) {
            needed = end - at;
            break;
          }
          if (seq >= start) {
            if (count > 0 && (count >= maxRecords || payloads + payloadBytes > maxBytes)) break;
            if (from === -1) from = at;
            count++;
            payloads += payloadBytes;
          }
          addIndexPoint(segment, seq, offset + at);
          at = end;
          seq++;
        }
        if (count > 0) {
          return { bytes: chunk.subarray(from, at), count, firstSeq: start, lastSeq: start + count - 1 };
        }
        if (seq > lastSeq) return { bytes: Buffer.alloc(0), count: 0, firstSeq: start, lastSeq: start - 1 };
        if (damagedAt >= 0 || got < want) {
          // Damage: a known hole wholly before `start` is stepped over; anything else is for the
          // decoded path, which finds the hole, reports it and gives the reader its warning.
          const hole = segment.holes?.find((each) => each.offset === offset + at);
          if (!hole || hole.nextSeq > start) return undefined;
          offset = hole.nextOffset;
          seq = hole.nextSeq;
          want = Math.min(endOffset - offset, maxBytes + INDEX_INTERVAL_BYTES + 64 * HEADER_BYTES);
          continue;
        }
        // The next entry did not fit in what was read: read again from it, at least all of it.
        offset += at;
        want = Math.min(endOffset - offset, Math.max(needed, maxBytes + 64 * HEADER_BYTES));
      }
    } finally {
      this.#releaseReader(segment);
    }
  }

  /**
   * The damaged stretch of `segment` at `offset`, where record `seq` should start: as found before,
   * or searched for now (see findNextEntry) and reported once. Reading goes on at the next intact
   * entry; only the records in between are lost.
   */
  async #holeAt(
    segment: Segment,
    handle: FileHandle,
    offset: number,
    seq: number,
    endOffset: number,
    lastSeq: number,
  ): Promise<Hole> {
    const known = segment.holes?.find((each) => each.offset === offset);
    if (known) return known;
    const next = await findNextEntry(handle, offset + 1, endOffset, seq - 1, lastSeq);
    const hole: Hole = next
      ? { offset, seq, nextOffset: next.offset, nextSeq: next.seq }
      : { offset, seq, nextOffset: endOffset, nextSeq: lastSeq + 1 };
    recordHole(segment, hole, next !== undefined);
    return hole;
  }

  /**
   * The read handle of `segment`, for one read; {@link #releaseReader} after. One segment per
   * spool keeps its handle open between reads (readers move forward through the segments), so a
   * spool holds at most one extra descriptor beyond the reads running.
   */
  async #acquireReader(segment: Segment): Promise<FileHandle> {
    const previous = this.#readSegmentNow;
    if (previous !== segment) {
      this.#readSegmentNow = segment;
      if (previous) dropReader(previous);
    }
    segment.dropReader = false;
    segment.readers = (segment.readers ?? 0) + 1;
    try {
      return await openReader(segment);
    } catch (error) {
      this.#releaseReader(segment);
      throw error;
    }
  }

  #releaseReader(segment: Segment): void {
    segment.readers = (segment.readers ?? 1) - 1;
    if (segment.readers === 0 && segment.dropReader) closeReader(segment);
  }

  /** Resolves once every record up to `seq` has been written (not necessarily synced). */
  #untilWritten(seq: number): Promise<void> {
    if (this.#writtenSeq >= seq) return Promise.resolve();
    if (this.#failure) return Promise.reject(this.#failure);
    const written = new Promise<void>((resolve, reject) =>
      this.#writtenWaiters.push({ seq, resolve, reject }),
    );
    // A pump pass that started before the append may not include it: this kick runs another.
    this.#kick().catch(() => {});
    return written;
  }

  #wrote(seq: number): void {
    if (seq > this.#writtenSeq) this.#writtenSeq = seq;
    if (this.#writtenWaiters.length === 0) return;
    const due = this.#writtenWaiters.filter((waiter) => waiter.seq <= this.#writtenSeq);
    if (due.length === 0) return;
    this.#writtenWaiters = this.#writtenWaiters.filter((waiter) => waiter.seq > this.#writtenSeq);
    for (const waiter of due) waiter.resolve();
  }

  // ---------------------------------------------------------------------------------------------
  // The pump: brings the files in line with the in-memory state, one pass at a time.

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      // A failure is kept in #failure and reported by the next call.
      this.#kick().catch(() => {});
    });
  }

  /** Resolves after a pump pass that started after this call has finished. */
  #kick(): Promise<void> {
    if (this.#failure) return Promise.reject(this.#failure);
    if (this.#released) return Promise.resolve();
    this.#dirty = true;
    this.#pumping ??= this.#pumpLoop();
    return this.#pumping;
  }

  /**
   * Runs passes until the files are in line. A pass that fails for space (ENOSPC, EDQUOT) is not a
   * failure: the spool pauses (appends fill the write buffer, then wait, which pauses the job),
   * puts a warning record in the job's stream, reports the pause, and retries with backoff until
   * the write goes through; then nothing was lost. Only closing the spool while the disk is still
   * full gives up (ERR_DISK_FULL, and what was not written is reported lost).
   */
  async #pumpLoop(): Promise<void> {
    try {
      while (this.#dirty) {
        this.#dirty = false;
        try {
          await this.#pumpOnce();
        } catch (error) {
          if (!isSpaceError(error) || this.#closed || this.#released) throw error;
          this.#pauseForSpace(error);
          await this.#spaceBackoff();
          if (this.#released) return;
          this.#dirty = true;
          continue;
        }
        if (this.#spacePausedSince && !this.#dirty) this.#resumeAfterSpace();
      }
    } catch (error) {
      throw this.#fail(error);
    } finally {
      this.#pumping = undefined;
    }
  }

  #pauseForSpace(error: unknown): void {
    if (this.#spacePausedSince) return;
    this.#spacePausedSince = new Date();
    this.#spaceRetryMs = SPACE_RETRY_MIN_MS;
    const code = String((error as { code?: unknown }).code ?? 'ENOSPC');
    reportIncident({
      kind: 'disk-full',
      code: AgentErrorCode.DiskFull,
      subject: `spool ${this.dir}`,
      detail: `writing failed (${code}): the job's output is paused and resumes, with nothing lost, once space is freed`,
    });
    if (!this.#closed) {
      // In the job's own stream, where its output stopped: written first once space returns.
      const warning: JobRecord = {
        stream: 'warning',
        data: `rjob: the disk holding the agent's state is full (${code}); this job's output was paused at ${this.#spacePausedSince.toISOString()} until space was freed. Nothing was lost. (${AgentErrorCode.DiskFull})`,
        seq: this.#lastSeq + 1,
        timeMs: this.#spacePausedSince.getTime(),
        jobId: this.#envelope.jobId,
        location: this.#envelope.location,
      };
      this.#accept(warning, encodeEntry(warning));
    }
    // Readers waiting for records that cannot be written now read what is.
    const written = this.#writtenWaiters;
    this.#writtenWaiters = [];
    for (const waiter of written) waiter.resolve();
    this.#fireChange();
  }

  #resumeAfterSpace(): void {
    const since = this.#spacePausedSince!;
    this.#spacePausedSince = undefined;
    reportIncident({
      kind: 'disk-space-back',
      code: AgentErrorCode.DiskFull,
      subject: `spool ${this.dir}`,
      detail: `space is back: the output paused at ${since.toISOString()} is written, nothing was lost`,
    });
    this.#fireChange();
  }

  async #spaceBackoff(): Promise<void> {
    const waitMs = this.#spaceRetryMs;
    this.#spaceRetryMs = Math.min(this.#spaceRetryMs * 2, SPACE_RETRY_MAX_MS);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, waitMs);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.#spaceWake = done;
    });
    this.#spaceWake = undefined;
  }

  /** True while writes fail for space and the job's output waits for it (see #pumpLoop). */
  get pausedForSpace(): boolean {
    return this.#spacePausedSince !== undefined;
  }

  /** The disk failed: every waiter learns it, and so does every later call. */
  #fail(error: unknown): RjobError {
    if (!this.#failure && isSpaceError(error)) {
      const unwritten = this.#lastSeq - this.#writtenSeq;
      if (unwritten > 0) {
        reportIncident({
          kind: 'lost',
          code: AgentErrorCode.DiskFull,
          subject: `spool ${this.dir}`,
          detail: `closed while the disk was still full: ${unwritten} record(s) after seq ${this.#writtenSeq} were never written`,
        });
      }
    }
    this.#failure ??= isSpaceError(error)
      ? diskFullError(`the spool ${this.dir}`, error)
      : new RjobError(AgentErrorCode.SpoolIo, `Spool ${this.dir} failed: ${(error as Error).message}`, {
          cause: error,
          details: { dir: this.dir },
        });
    this.#rejectWaiters(this.#failure);
    const written = this.#writtenWaiters;
    this.#writtenWaiters = [];
    for (const waiter of written) waiter.reject(this.#failure);
    this.#fireChange();
    return this.#failure;
  }

  /**
   * An fsync pass, after any one in progress. Passes run beside the pump, not in it: a full
   * segment's fsync took about 15 ms here, and appends and reads waiting for it cost a quarter of
   * a bulk job's throughput. Only seal, sync and close wait for one (through the pump's #syncDue).
   */
  #syncPass(): Promise<void> {
    const previous = this.#syncLane ?? Promise.resolve();
    const pass = previous.catch(() => {}).then(() => this.#syncSegments());
    this.#syncLane = pass;
    const clear = (): void => {
      if (this.#syncLane === pass) this.#syncLane = undefined;
    };
    pass.then(clear, clear);
    return pass;
  }

  async #syncSegments(): Promise<void> {
    if (this.#released) return;
    for (const segment of [...this.#segments]) {
      if (segment.handle && segment.unsynced) {
        segment.unsynced = false;
        try {
          await segment.handle.sync();
        } catch (error) {
          segment.unsynced = true;
          throw error;
        }
      }
      // A closed segment, fully written and now synced, is done with: release its file.
      if (
        segment.sealed &&
        !segment.settled &&
        segment.handle &&
        !segment.unsynced &&
        segment.pending.length === 0 &&
        segment.writtenBytes === segment.bytes
      ) {
        const handle = segment.handle;
        segment.handle = undefined;
        segment.settled = true;
        await handle.close();
      }
    }
    if (this.#dirDirty) {
      this.#dirDirty = false;
      const dir = await open(this.dir, 'r');
      try {
        await dir.sync();
      } finally {
        await dir.close();
      }
    }
  }

  async #pumpOnce(): Promise<void> {
    let wrote = false;
    // In order: a closed segment is completely written before its successor gets data, so after
    // the agent process dies only the last segment can have a torn tail. (After a power cut, data
    // not yet fsynced by a sync pass may be torn anywhere; reads of such a file check every CRC
    // and report ERR_SPOOL_CORRUPT at the tear.)
    for (const segment of [...this.#segments]) wrote = (await this.#writeSegment(segment)) || wrote;
    // The acknowledged position is persisted before the segments it frees are deleted, so a
    // restart never mistakes acknowledged records for dropped ones.
    // A deleted segment must never be ahead of the persisted position: a restart would read the
    // missing records as dropped.
    if (this.#metaDirty && (this.#metaDue || this.#syncDue || this.#closed || this.#doomed.length > 0)) {
      this.#metaDirty = false;
      this.#metaDue = false;
      const meta: SpoolMeta = { version: 1, ackedSeq: this.#ackedSeq, sealed: this.#sealed };
      try {
        await writeFileAtomic(join(this.dir, META_FILE), Buffer.from(JSON.stringify(meta)), { fsync: false });
      } catch (error) {
        // Written again by the retry (see #pumpLoop).
        this.#metaDirty = true;
        this.#metaDue = true;
        throw error;
      }
      this.#dirDirty = true;
    }
    const doomed = this.#doomed;
    this.#doomed = [];
    // A sync pass may be using a doomed segment's file.
    if (doomed.length > 0) await this.#syncLane?.catch(() => {});
    for (const segment of doomed) {
      segment.pending = [];
      await segment.handle?.close();
      segment.handle = undefined;
      dropReader(segment);
      if (segment.created) await rm(segment.path, { force: true });
      this.#dirDirty = true;
    }
    if (this.#syncDue) {
      this.#syncDue = false;
      try {
        await this.#syncPass();
      } catch (error) {
        this.#syncDue = true;
        throw error;
      }
    } else if ((wrote || this.#dirDirty) && this.#syncIntervalMs > 0 && !this.#syncTimer && !this.#closed) {
      this.#syncTimer = setTimeout(() => {
        this.#syncTimer = undefined;
        this.#syncPass().catch((error) => {
          if (!isSpaceError(error)) return this.#fail(error);
          // The pump retries it with the next pass (and pauses until space returns).
          this.#syncDue = true;
          this.#kick().catch(() => {});
        });
      }, this.#syncIntervalMs);
      this.#syncTimer.unref();
    }
    this.#updateWritable();
  }

  /**
   * After a write of `buffers` (one entry each) that put only `bytesWritten` bytes on disk: the
   * whole entries among them count as written, a partial one is cut off the file, and the others
   * go back to the front of the segment's queue.
   */
  async #requeue(segment: Segment, buffers: Buffer[], bytesWritten: number): Promise<void> {
    let done = 0;
    let count = 0;
    while (count < buffers.length && done + buffers[count]!.length <= bytesWritten) {
      done += buffers[count]!.length;
      count++;
    }
    if (done < bytesWritten) await segment.handle!.truncate(segment.writtenBytes + done);
    if (count > 0) {
      segment.writtenBytes += done;
      segment.writtenLastSeq += count;
      segment.unsynced = true;
      this.#wrote(segment.writtenLastSeq);
    }
    // A segment deleted meanwhile (acknowledged or dropped) needs none of it.
    if (!this.#segments.includes(segment)) return;
    const rest = buffers.slice(count);
    const restBytes = rest.reduce((sum, buffer) => sum + buffer.length, 0);
    segment.pending = [...rest, ...segment.pending];
    segment.pendingBytes += restBytes;
    this.#pendingBytes += restBytes;
  }

  /** Creates, writes, and (once sealed) fsyncs and closes one segment. True if it wrote data. */
  async #writeSegment(segment: Segment): Promise<boolean> {
    if (segment.settled) return false;
    if (!segment.handle) {
      segment.handle = await open(segment.path, segment.created ? 'r+' : 'w', 0o600);
      if (!segment.created) this.#dirDirty = true;
      segment.created = true;
    }
    let wrote = false;
    if (segment.pending.length > 0) {
      const buffers = segment.pending;
      const sizeBytes = segment.pendingBytes;
      const lastSeq = segment.lastSeq;
      segment.pending = [];
      segment.pendingBytes = 0;
      this.#pendingBytes -= sizeBytes;
      // Entries from one appendMany are views of one buffer: written as they are, not copied.
      let bytesWritten = 0;
      let failure: unknown;
      try {
        ({ bytesWritten } = await segment.handle.writev(coalesce(buffers), segment.writtenBytes));
      } catch (error) {
        failure = error;
      }
      if (bytesWritten !== sizeBytes) {
        // The disk filled up (a short write; the next one says why) or the write failed: keep
        // the whole entries that made it, cut a partial one off, and queue the rest again.
        await this.#requeue(segment, buffers, bytesWritten);
        if (failure) throw failure;
        this.#dirty = true;
        return true;
      }
      segment.writtenBytes += sizeBytes;
      segment.writtenLastSeq = lastSeq;
      segment.unsynced = true;
      wrote = true;
      this.#wrote(lastSeq);
    }
    // A closed segment is fsynced and released by the next sync pass (see #syncPass).
    return wrote;
  }
}

/** Joins views that lie back to back in one buffer (entries of one appendMany) into one view. */
function coalesce(buffers: Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  // The run so far: `first` and the length it has grown to (a view is made once, at its end).
  let first = buffers[0]!;
  let length = first.length;
  const close = (): void => {
    out.push(length === first.length ? first : Buffer.from(first.buffer, first.byteOffset, length));
  };
  for (let i = 1; i < buffers.length; i++) {
    const next = buffers[i]!;
    if (next.buffer === first.buffer && first.byteOffset + length === next.byteOffset) {
      length += next.length;
    } else {
      close();
      first = next;
      length = next.length;
    }
  }
  close();
  return out;
}

/** The segment's read handle, opened on first use. A failed open is not kept. */
function openReader(segment: Segment): Promise<FileHandle> {
  if (!segment.reader) {
    const opening = open(segment.path, 'r');
    segment.reader = opening;
    opening.catch(() => {
      if (segment.reader === opening) segment.reader = undefined;
    });
  }
  return segment.reader;
}

/** Closes the segment's read handle now, or after the reads running on it. */
function dropReader(segment: Segment): void {
  segment.dropReader = true;
  if (!segment.readers) closeReader(segment);
}

function closeReader(segment: Segment): void {
  const reader = segment.reader;
  segment.reader = undefined;
  segment.dropReader = false;
  reader?.then((handle) => handle.close()).catch(() => {});
}

function newSegment(dir: string, firstSeq: number): Segment {
  return {
    firstSeq,
    path: join(dir, segmentFileName(firstSeq)),
    lastSeq: firstSeq - 1,
    bytes: 0,
    writtenBytes: 0,
    writtenLastSeq: firstSeq - 1,
    pending: [],
    pendingBytes: 0,
    handle: undefined,
    created: false,
    sealed: false,
    settled: false,
    unsynced: false,
    ownWrites: true,
    indexSeqs: [firstSeq],
    indexOffsets: [0],
  };
}

/** The last index point at or before record `start` within the first `endOffset` bytes. */
function indexPointBefore(
  segment: Segment,
  start: number,
  endOffset: number,
): { seq: number; offset: number } {
  for (let i = segment.indexSeqs.length - 1; i > 0; i--) {
    if (segment.indexSeqs[i]! <= start && segment.indexOffsets[i]! < endOffset) {
      return { seq: segment.indexSeqs[i]!, offset: segment.indexOffsets[i]! };
    }
  }
  return { seq: segment.indexSeqs[0] ?? segment.firstSeq, offset: segment.indexOffsets[0] ?? 0 };
}

/** Adds an index point if it lies at least one interval past the last one (keeps the index sorted). */
function addIndexPoint(segment: Segment, seq: number, offset: number): void {
  const last = segment.indexOffsets.at(-1) ?? 0;
  if (offset - last >= INDEX_INTERVAL_BYTES) {
    segment.indexSeqs.push(seq);
    segment.indexOffsets.push(offset);
  }
}

function gapRecord(
  gap: SpoolGap,
  like: { jobId: number; location: string; timeMs?: number },
  damagedFile?: string,
): SpoolGapRecord {
  return {
    stream: 'warning',
    data:
      damagedFile === undefined
        ? `${gap.droppedRecords} record(s) (seq ${gap.fromSeq}–${gap.toSeq}) were dropped: the spool reached its bound before they were received.`
        : `${gap.droppedRecords} record(s) (seq ${gap.fromSeq}–${gap.toSeq}) were lost: their bytes in ${damagedFile} are damaged (${AgentErrorCode.StateDamaged}). The records after them are kept.`,
    seq: gap.toSeq,
    timeMs: like.timeMs ?? Date.now(),
    jobId: like.jobId,
    location: like.location,
    gap,
  };
}

function deferred(): Deferred {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

async function untilAborted(promise: Promise<void>, signal: AbortSignal | undefined): Promise<void> {
  if (!signal) return promise;
  let onAbort: (() => void) | undefined;
  try {
    const aborted = new Promise<void>((resolve) => {
      onAbort = () => resolve();
      signal.addEventListener('abort', onAbort);
    });
    await Promise.race([promise, aborted]);
  } finally {
    if (onAbort) signal.removeEventListener('abort', onAbort);
  }
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) {
    throw new RjobError(ErrorCode.InvalidArgument, `${name} must be a positive number, not ${value}.`);
  }
  return Math.floor(value);
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

function closedError(dir: string): RjobError {
  return new RjobError(AgentErrorCode.SpoolClosed, `The spool ${dir} is closed.`, { details: { dir } });
}

function sealedError(dir: string): RjobError {
  return new RjobError(AgentErrorCode.SpoolSealed, `The spool ${dir} is sealed: its job writes no more.`, {
    details: { dir },
  });
}

/** Keeps a hole (in file order), indexes the entry after it, and reports the loss once. */
function recordHole(segment: Segment, hole: Hole, found: boolean): void {
  const holes = (segment.holes ??= []);
  holes.push(hole);
  holes.sort((a, b) => a.offset - b.offset);
  if (found) addIndexPointAt(segment, hole.nextSeq, hole.nextOffset);
  const lost =
    hole.nextSeq > hole.seq
      ? `record(s) ${hole.seq}–${hole.nextSeq - 1} lost`
      : 'damaged bytes skipped, no record lost';
  reportIncident({
    kind: 'damaged',
    code: AgentErrorCode.StateDamaged,
    subject: `spool segment ${segment.path}`,
    detail: `bytes ${hole.offset}–${hole.nextOffset - 1} are not valid records: ${lost}, the records after them are kept`,
  });
}

/** An index point at a known entry start, wherever it falls (the index stays sorted). */
function addIndexPointAt(segment: Segment, seq: number, offset: number): void {
  let i = segment.indexOffsets.length;
  while (i > 0 && segment.indexOffsets[i - 1]! > offset) i--;
  if (i > 0 && segment.indexOffsets[i - 1] === offset) return;
  segment.indexOffsets.splice(i, 0, offset);
  segment.indexSeqs.splice(i, 0, seq);
}
