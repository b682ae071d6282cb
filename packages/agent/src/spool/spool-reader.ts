/**
 * Reading a spool: records from a sequence number, decoded or as the entries they are stored as,
 * out of the tail cache when the reader keeps up, else out of the segment files (only as far as
 * written), with a warning record in place of records dropped or damaged.
 */
import type { FileHandle } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import { type JobRecord, RjobError } from '@rjob/core';
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
import {
  decodeRecord,
  findNextEntry,
  HEADER_BYTES,
  MAX_ENTRY_PAYLOAD_BYTES,
  readFully,
  SegmentScanner,
} from './segment-format.js';
import type { SpoolState } from './spool-state.js';
import type { SpoolWriter } from './spool-writer.js';
import type {
  PackedRecords,
  SpoolBatch,
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
   * Records from `fromSeq` on, as far as written (see RecordSpool.read); a segment deleted under
   * the read rejects with ENOENT, and the caller reads again.
   */
  read(fromSeq: number, options: SpoolReadOptions = {}): Promise<JobRecord[]> {
    return this.#whenWritten(() => this.#read(fromSeq, options));
  }

  /** {@link read} as entries; undefined when records at `fromSeq` were dropped. */
  readPacked(fromSeq: number, options: SpoolReadOptions = {}): Promise<PackedRecords | undefined> {
    return this.#whenWritten(() => this.#readPacked(fromSeq, options));
  }

  /** Runs a read once everything appended is written, again if a segment vanished under it. */
  async #whenWritten<T>(readOnce: () => Promise<T>): Promise<T> {
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
        return await readOnce();
      } catch (error) {
        // A segment deleted by an ack or a drop while we read it: start over from the new state.
        if ((error as NodeJS.ErrnoException).code === 'ENOENT' && attempt < 8) continue;
        throw error;
      }
    }
  }

  /**
   * Yields batches from `fromSeq` (default: the first unacknowledged record) as they are appended,
   * packed where they can be; see RecordSpool.follow.
   */
  async *follow(
    fromSeq: number | undefined,
    options: SpoolFollowOptions,
    packed: boolean,
  ): AsyncGenerator<SpoolBatch, void, undefined> {
    let next = fromSeq ?? this.#state.ackedSeq + 1;
    const { signal } = options;
    while (!signal?.aborted && !this.#state.closed) {
      // Taken before reading, so an append that lands during the read still wakes us.
      const changed = this.#state.nextChange();
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
      if (this.#state.sealed && next > this.#state.lastSeq) return;
      await untilAborted(changed, signal);
    }
  }

  async #read(fromSeq: number, options: SpoolReadOptions): Promise<JobRecord[]> {
    const maxRecords = Math.max(1, options.maxRecords ?? 1000);
    const maxBytes = options.maxBytes ?? 1024 * 1024;
    const segments = this.#state.segments.slice();
    let start = Math.max(Math.floor(fromSeq), this.#state.ackedSeq + 1, 1);
    let gap: SpoolGap | undefined;
    const firstSeq = segments[0]!.firstSeq;
    if (start < firstSeq) {
      gap = { droppedRecords: firstSeq - start, fromSeq: start, toSeq: firstSeq - 1 };
      start = firstSeq;
    }
    if (!gap) {
      const cached = this.#state.tail.read(start, maxRecords, maxBytes, this.#state.writtenSeq);
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
    if (gap) out.unshift(gapRecord(gap, out[0] ?? this.#state.envelope));
    return out;
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
    const handle = await this.#handles.acquire(segment);
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
            out.push(gapRecord(gap, out.at(-1) ?? this.#state.envelope, segment.path));
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
      this.#handles.release(segment);
    }
  }

  async #readPacked(fromSeq: number, options: SpoolReadOptions): Promise<PackedRecords | undefined> {
    const maxRecords = Math.max(1, options.maxRecords ?? 1000);
    const maxBytes = options.maxBytes ?? 1024 * 1024;
    const segments = this.#state.segments.slice();
    const start = Math.max(Math.floor(fromSeq), this.#state.ackedSeq + 1, 1);
    if (start < segments[0]!.firstSeq) return undefined;
    const cached = this.#state.tail.readPacked(start, maxRecords, maxBytes, this.#state.writtenSeq);
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
    const handle = await this.#handles.acquire(segment);
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
