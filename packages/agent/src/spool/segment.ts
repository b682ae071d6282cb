/**
 * One segment file of a spool as the spool keeps it in memory: where its records are, what of it
 * is written, its sparse index and the damage found in it.
 */
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { AgentErrorCode } from '../errors.js';
import { reportIncident } from '../incidents.js';
import { segmentFileName } from './segment-format.js';

/** One index point per this many bytes of a segment. */
export const INDEX_INTERVAL_BYTES = 64 * 1024;

export interface Segment {
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
  /** Damaged stretches found in the file (see SpoolReader), in file order. */
  holes?: Hole[];
}

/** Damage in a segment: from byte `offset` (where record `seq` should be) to the next intact entry. */
export interface Hole {
  offset: number;
  seq: number;
  /** The next intact entry (the end of the data when there is none). */
  nextOffset: number;
  nextSeq: number;
}

export function newSegment(dir: string, firstSeq: number): Segment {
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
export function indexPointBefore(
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
export function addIndexPoint(segment: Segment, seq: number, offset: number): void {
  const last = segment.indexOffsets.at(-1) ?? 0;
  if (offset - last >= INDEX_INTERVAL_BYTES) {
    segment.indexSeqs.push(seq);
    segment.indexOffsets.push(offset);
  }
}

export function recordHole(segment: Segment, hole: Hole, found: boolean): void {
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
