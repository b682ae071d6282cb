/**
 * Where a session's job records are read from. Two implementations of one contract:
 *
 * - MemoryRecords (memory-records.ts): straight from the JobManager's buffers (bounded by its producer pause).
 * - SpooledRecords (spooled-records.ts): each job's records are moved to a disk spool (spoolJob), bounded with a
 *   block or drop policy, persisted with the job's entry in the store. Receives read the spool and
 *   acknowledge what they consumed.
 *
 * A consuming stream yields each record with a `commit` that consumes it. The subscription pump
 * commits once the client has acknowledged the event carrying the record, so a record a dead
 * client never acknowledged is still there for the client that takes its session over. (The
 * memory source cannot give records back: it consumes when it yields, and has no `commit`.)
 */
import {
  type Job,
  type JobRecord,
  reasonRecord as coreReasonRecord,
  type SerializedError,
  serializeError,
} from '@rjob/core';
import { encodeRecordEntries } from '@rjob/core/codec';

/**
 * Records of one job, in order, as one read produced them, as record entries (the one form records
 * cross the wire in: a `job.packed` event's `entries`). Never empty.
 */
export interface StreamedBatch {
  entries: Buffer;
  /** Consumes the records (and every earlier one of their job). Absent when nothing is left to do. */
  commit?: () => void;
  /**
   * Of a consuming stream's batch that can be acknowledged record by record: the leaf job the
   * records are of and the seq of the last one. A client acknowledges through
   * {@link RecordSource.ackUpTo} as it takes them.
   */
  leaf?: Job;
  lastSeq?: number;
}

/** How {@link RecordSource.stream} reads. */
export interface StreamOptions {
  /** Leave the records where they are. Default false: they are reserved, then consumed on commit. */
  keep?: boolean;
  /**
   * Keep going as the jobs write, until they finished (Receive-Job -Wait). Default true. False
   * gives what is there now, then ends (Receive-Job).
   */
  follow?: boolean;
}

/** Records read but not consumed yet (see {@link RecordSource.hold}). */
export interface HeldRecords {
  /** What `receive(jobs, false)` would have returned. */
  runs: Buffer[];
  /** Consumes exactly these records (not any written since). */
  commit(): Promise<void>;
  /** Gives them back, unconsumed. */
  release(): void;
}

export interface RecordSource {
  /**
   * True when {@link hold} sets the records aside (no other receiver gets them until commit or
   * release). A source without it consumes as it reads, and cannot give records back.
   */
  readonly holdsAside: boolean;
  /** Called for every job the session starts, before anyone reads it. */
  track(job: Job, data?: unknown): Promise<void>;
  /**
   * The records of the jobs (their leaves), consumed unless `keep`; a Failed job's reason last. As
   * runs of record entries, one job's consecutive records each (a `job.receive` answer's `entries`).
   */
  receive(jobs: Job[], keep: boolean): Promise<Buffer[]>;
  /**
   * A consuming receive in two steps, for a receiver that may still fail after reading (writing a
   * file): the records are read now and consumed only by `commit`. Exactly one of `commit` and
   * `release` must follow.
   */
  hold(jobs: Job[]): Promise<HeldRecords>;
  /**
   * Yields records, in batches, as they are written until every job finished and everything was
   * yielded. `signal` ends it early; a record is consumed (unless `keep`) only when it is yielded.
   * A batch holds what was there to read at once (bounded by {@link STREAM_BATCH_BYTES} and
   * {@link STREAM_BATCH_RECORDS}): a slow producer gives batches of one record, without delay.
   */
  stream(jobs: Job[], signal: AbortSignal, options?: StreamOptions): AsyncGenerator<StreamedBatch>;
  /**
   * Consumes the leaf's records up to `seq`, which a consuming stream gave out (a client
   * acknowledged them). Does nothing for a source that consumes as it yields.
   */
  ackUpTo(leaf: Job, seq: number): void;
  hasMoreData(job: Job): boolean;
  /** Resolves once the jobs' records and final states are persisted (at once for memory). */
  settled(jobs: Job[]): Promise<void>;
  /** The jobs were removed from the manager: drop their records. */
  forget(jobs: Job[]): Promise<void>;
  /**
   * The session ends: release everything and delete what was kept on disk, unless `keepStored`
   * (the agent is shutting down; the jobs' final states and records stay for the next one).
   */
  dispose(keepStored?: boolean): Promise<void>;
}

/**
 * Bounds of one streamed batch. Large enough that per-message costs (encoding, framing, a socket
 * write, an ack) vanish next to the records; small enough that a batch stays far below the
 * protocol's 16 MiB frame limit and the 8 MiB receive window, so several are in flight at once.
 */
export const STREAM_BATCH_BYTES = 1024 * 1024;
export const STREAM_BATCH_RECORDS = 4096;

/** Core's reason record (as JobManager.receive adds it), with the reason serialized for the wire. */
export function reasonRecord(job: Job): JobRecord<SerializedError> {
  return { ...coreReasonRecord(job), data: serializeError(job.reason) };
}

/** A Failed job's reason record as its entry (numbered 0, as the record is). */
export function reasonEntry(job: Job): Buffer {
  return encodeRecordEntries([reasonRecord(job)], 0);
}

/** Resolves once `signal` is aborted. */
export function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
}
