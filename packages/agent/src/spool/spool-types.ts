/**
 * The public shapes of a record spool: its options, read options, the gap warning a `drop` spool
 * gives, and the batches reads give. Re-exported by record-spool.ts, which other modules import.
 */
import type { JobRecord } from '@rjob/core';

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
 * The warning record a reader gets (as an entry, decoded with `decodeRecordEntries`) in place of
 * dropped records. Its `seq` is the last dropped one, so it sits where the gap is, and
 * acknowledging past it consumes it like any record.
 */
export type SpoolGapRecord = JobRecord<string> & { gap: SpoolGap };

export function isSpoolGapRecord(record: JobRecord): record is SpoolGapRecord {
  return typeof (record as Partial<SpoolGapRecord>).gap === 'object';
}

/**
 * Consecutive records of one spool as the entries they are stored as (see @rjob/core's
 * record-entries): what a read gives, and what a `job.packed` event carries without decoding
 * them. `count` entries, numbered `firstSeq` to `lastSeq` (a warning entry for lost records is
 * one entry numbered as the last of them). `bytes` may be a view of the spool's own memory (its
 * tail cache): pass it on or decode it, never change it.
 */
export interface PackedRecords {
  bytes: Buffer;
  count: number;
  firstSeq: number;
  lastSeq: number;
}
