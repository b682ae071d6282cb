/**
 * Reading a spool: records from a sequence number as the entries they are stored as, out of the
 * tail cache when the reader keeps up, else out of the segment files (only as far as written),
 * with a warning entry in place of records dropped or damaged. Nothing is decoded here.
 */
import type { FileHandle } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import { RjobError } from '@rjob/core';
import { encodeRecordEntries } from '@rjob/core/codec';
import { AgentErrorCode } from '../errors.js';
import { ReaderHandles } from './handle-cache.js';
import {
  addIndexPoint,
  type Hole,
  INDEX_INTERVAL_BYTES,
  indexPointBefore,
  recordHole,
  type Segment,
} from './segment.js';
import { findNextEntry, HEADER_BYTES, MAX_ENTRY_PAYLOAD_BYTES, readFully } from './segment-format.js';
import type { SpoolState } from './spool-state.js';
import type { SpoolWriter } from './spool-writer.js';
import type {
  PackedRecords,
  SpoolFollowOptions,
  SpoolGap,
  SpoolGapRecord,
  SpoolReadOptions,
} from './spool-types.js';

/** The reads of one spool, on the state its writer keeps up to date. */
export class SpoolReader {
  readonly #state: SpoolState;
  readonly #writer: SpoolWriter;
  readonly #handles = new ReaderHandles();

  constructor(state: SpoolState, writer: SpoolWriter) {
    this.#state = state;
    this.#writer = writer;
  }

  /**
   * Entries from `fromSeq` on, as far as written (see RecordSpool.read). Runs once everything
   * appended is written, and again if a segment was deleted under it (an ack or a drop).
   */
  async read(fromSeq: number, options: SpoolReadOptions = {}): Promise<PackedRecords> {
    const problem = this.#state.readProblem();
    if (problem) throw problem;
    // Only what is appended but not yet handed to the OS needs the pump; waiting for a whole pass
    // (an fsync, a meta rewrite) would put disk latency on every read of a live job.
    // While the disk is full, what is not written cannot be: read what is.
    if (this.#state.writtenSeq < this.#state.lastSeq && !this.#writer.pausedForSpace) {
      await this.#writer.untilWritten(this.#state.lastSeq);
    }
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#read(fromSeq, options);
      } catch (error) {
        // A segment deleted by an ack or a drop while we read it: start over from the new state.
        if ((error as NodeJS.ErrnoException).code === 'ENOENT' && attempt < 8) continue;
        throw error;
      }
    }
  }

  /**
   * Yields batches from `fromSeq` (default: the first unacknowledged record) as they are appended;
   * see RecordSpool.follow.
   */
  async *follow(
    fromSeq: number | undefined,
    options: SpoolFollowOptions,
  ): AsyncGenerator<PackedRecords, void, undefined> {
    let next = fromSeq ?? this.#state.ackedSeq + 1;
    const { signal } = options;
    while (!signal?.aborted && !this.#state.closed) {
      // Taken before reading, so an append that lands during the read still wakes us.
      const changed = this.#state.nextChange();
      let batch: PackedRecords;
      try {
        batch = await this.read(next, options);
      } catch (error) {
        if (RjobError.hasCode(error, AgentErrorCode.SpoolClosed)) return;
        throw error;
      }
      if (batch.count > 0) {
        next = batch.lastSeq + 1;
        yield batch;
        if (signal?.aborted) return;
        continue;
      }
      if (this.#state.sealed && next > this.#state.lastSeq) return;
      await untilAborted(changed, signal);
    }
  }

  async #read(fromSeq: number, options: SpoolReadOptions): Promise<PackedRecords> {
    const maxRecords = Math.max(1, options.maxRecords ?? 1000);
    const maxBytes = options.maxBytes ?? 1024 * 1024;
    const segments = this.#state.segments.slice();
    let start = Math.max(Math.floor(fromSeq), this.#state.ackedSeq + 1, 1);
    const out = new BatchBuilder(start, maxRecords, maxBytes);
    const firstSeq = segments[0]!.firstSeq;
    if (start < firstSeq) {
      // A `drop` spool deleted records at the reader's position: the warning comes first.
      out.gap(
        { droppedRecords: firstSeq - start, fromSeq: start, toSeq: firstSeq - 1 },
        this.#state.envelope,
      );
      start = firstSeq;
    } else {
      const cached = this.#state.tail.read(start, maxRecords, maxBytes, this.#state.writtenSeq);
      if (cached) return cached;
    }
    for (const segment of segments) {
      if (out.full) break;
      const writtenLastSeq = segment.writtenLastSeq;
      if (writtenLastSeq < start) {
        if (segment.lastSeq > writtenLastSeq) break;
        continue;
      }
      const full = await this.#readSegment(segment, start, out);
      if (full || segment.lastSeq > writtenLastSeq) break;
      start = writtenLastSeq + 1;
    }
    return out.finish();
  }

  /**
   * Adds the entries ≥ `start` of one segment to `out`, read with as few read calls as fit and
   * handed on as read: the headers are walked (and, for files a previous process wrote, the CRCs
   * checked), the records are not decoded. A damaged stretch becomes one warning entry. True when
   * a limit was reached.
   */
  async #readSegment(segment: Segment, start: number, out: BatchBuilder): Promise<boolean> {
    // Snapshot: the pump may write more while we read, and we must not read past what it finished.
    const endOffset = segment.writtenBytes;
    const lastSeq = segment.writtenLastSeq;
    let { seq, offset } = indexPointBefore(segment, start, endOffset);
    const verify = !segment.ownWrites;
    const handle = await this.#handles.acquire(segment);
    try {
      // Enough for the skip up to `start` (at most one index interval) and a full batch.
      let want = Math.min(endOffset - offset, out.readAheadBytes + INDEX_INTERVAL_BYTES);
      while (seq <= lastSeq) {
        const chunk = Buffer.allocUnsafe(want);
        const got = await readFully(handle, chunk, want, offset);
        let at = 0;
        let from = -1;
        let needed = 0;
        let damaged = false;
        let full = false;
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
            damaged = true;
            break;
          }
          if (end > got) {
            needed = end - at;
            break;
          }
          if (seq >= start) {
            if (!out.fits(payloadBytes)) {
              full = true;
              break;
            }
            if (from === -1) from = at;
            out.take(seq, payloadBytes);
          }
          addIndexPoint(segment, seq, offset + at);
          at = end;
          seq++;
        }
        if (from !== -1) out.piece(chunk.subarray(from, at));
        if (full) return true;
        if (seq > lastSeq) break;
        if (damaged || got < want) {
          // Reading goes on at the next intact entry; the records in between become one warning.
          const hole = await this.#holeAt(segment, handle, offset + at, seq, endOffset, lastSeq);
          const lostTo = hole.nextSeq - 1;
          if (lostTo >= start) {
            if (out.full) return true;
            const fromSeq = Math.max(seq, start);
            out.gap(
              { droppedRecords: lostTo - fromSeq + 1, fromSeq, toSeq: lostTo },
              this.#state.envelope,
              segment.path,
            );
          }
          offset = hole.nextOffset;
          seq = hole.nextSeq;
          want = Math.min(endOffset - offset, out.readAheadBytes + INDEX_INTERVAL_BYTES);
          continue;
        }
        // The next entry did not fit in what was read: read again from it, at least all of it.
        offset += at;
        want = Math.min(endOffset - offset, Math.max(needed, out.readAheadBytes));
      }
      return out.full;
    } finally {
      this.#handles.release(segment);
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
}

/**
 * One read's batch as it is gathered: views of what was read (and warning entries), counted
 * against the read's limits, joined once at the end (not at all when there is one).
 */
class BatchBuilder {
  readonly #pieces: Buffer[] = [];
  readonly #firstSeq: number;
  #lastSeq: number;
  #count = 0;
  #recordsLeft: number;
  #bytesLeft: number;

  constructor(firstSeq: number, maxRecords: number, maxBytes: number) {
    this.#firstSeq = firstSeq;
    this.#lastSeq = firstSeq - 1;
    this.#recordsLeft = maxRecords;
    this.#bytesLeft = maxBytes;
  }

  get full(): boolean {
    return this.#recordsLeft <= 0;
  }

  /**
   * What is worth reading ahead for the rest of the batch: the payload budget left (none once a
   * first record larger than the budget took it) and room for headers.
   */
  get readAheadBytes(): number {
    return Math.max(0, this.#bytesLeft) + 64 * HEADER_BYTES;
  }

  /** Room for a record with this payload; the first is taken whatever its size. */
  fits(payloadBytes: number): boolean {
    return this.#recordsLeft > 0 && (this.#count === 0 || payloadBytes <= this.#bytesLeft);
  }

  /** Counts a record whose entry is part of the next {@link piece}. */
  take(seq: number, payloadBytes: number): void {
    this.#count++;
    this.#recordsLeft--;
    this.#bytesLeft -= payloadBytes;
    this.#lastSeq = seq;
  }

  /** Entries already counted with {@link take}. */
  piece(bytes: Buffer): void {
    this.#pieces.push(bytes);
  }

  /** The warning entry for records lost at the reader's position (it counts as one record). */
  gap(gap: SpoolGap, like: { jobId: number; location: string }, damagedFile?: string): void {
    this.#pieces.push(encodeRecordEntries([gapRecord(gap, like, damagedFile)], gap.toSeq));
    this.#count++;
    this.#recordsLeft--;
    this.#lastSeq = gap.toSeq;
  }

  finish(): PackedRecords {
    const pieces = this.#pieces;
    const bytes = pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces);
    return { bytes, count: this.#count, firstSeq: this.#firstSeq, lastSeq: this.#lastSeq };
  }
}

function gapRecord(
  gap: SpoolGap,
  like: { jobId: number; location: string },
  damagedFile?: string,
): SpoolGapRecord {
  return {
    stream: 'warning',
    data:
      damagedFile === undefined
        ? `${gap.droppedRecords} record(s) (seq ${gap.fromSeq}–${gap.toSeq}) were dropped: the spool reached its bound before they were received.`
        : `${gap.droppedRecords} record(s) (seq ${gap.fromSeq}–${gap.toSeq}) were lost: their bytes in ${damagedFile} are damaged (${AgentErrorCode.StateDamaged}). The records after them are kept.`,
    seq: gap.toSeq,
    timeMs: Date.now(),
    jobId: like.jobId,
    location: like.location,
    gap,
  };
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
