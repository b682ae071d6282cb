/**
 * Opening a spool's directory after a restart or a crash: its segments found again, the torn tail
 * of the last one cut off, damage stepped over, and the meta file (acknowledged position, sealed
 * flag) read. The meta file is written by the writer (see {@link writeMeta}).
 */
import { mkdir, open, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { AgentErrorCode } from '../errors.js';
import { TEMP_MARKER, writeFileAtomic } from '../fs/atomic-file.js';
import { reportIncident } from '../incidents.js';
import { addIndexPoint, newSegment, recordHole, type Segment } from './segment.js';
import {
  decodeRecord,
  findNextEntry,
  HEADER_BYTES,
  parseSegmentFileName,
  SegmentScanner,
} from './segment-format.js';
import type { SpoolState } from './spool-state.js';

const META_FILE = 'spool.meta';

export interface SpoolMeta {
  version: 1;
  ackedSeq: number;
  sealed: boolean;
}

/** Replaces the meta file (atomically, not fsynced: the writer's sync pass fsyncs the directory). */
export function writeMeta(dir: string, meta: SpoolMeta): Promise<void> {
  return writeFileAtomic(join(dir, META_FILE), Buffer.from(JSON.stringify(meta)), { fsync: false });
}

/**
 * Fills a fresh spool's state from its directory (created 0700 if missing): every complete entry
 * is kept, a torn tail is cut off, so appends continue right after the last intact record.
 */
export async function recoverSpool(state: SpoolState): Promise<void> {
  await mkdir(state.dir, { recursive: true, mode: 0o700 });
  const names = await readdir(state.dir);
  for (const name of names) {
    if (name.includes(TEMP_MARKER)) await rm(join(state.dir, name), { force: true });
  }
  const meta = await readMeta(state.dir);
  const firstSeqs = names
    .map(parseSegmentFileName)
    .filter((seq): seq is number => seq !== undefined)
    .sort((a, b) => a - b);
  for (let i = 0; i < firstSeqs.length - 1; i++) {
    const segment = newSegment(state.dir, firstSeqs[i]!);
    const size = (await stat(segment.path)).size;
    segment.lastSeq = segment.writtenLastSeq = firstSeqs[i + 1]! - 1;
    segment.bytes = segment.writtenBytes = size;
    segment.created = segment.sealed = segment.settled = true;
    segment.ownWrites = false;
    state.segments.push(segment);
  }
  const lastFirstSeq = firstSeqs.at(-1);
  if (lastFirstSeq === undefined) {
    state.segments.push(newSegment(state.dir, Math.max(1, meta.ackedSeq + 1)));
  } else {
    const recovered = newSegment(state.dir, lastFirstSeq);
    // Appends go on in this file, but what is in it already came from a previous process.
    recovered.ownWrites = false;
    state.segments.push(await recoverTail(state, recovered));
  }
  const tail = state.segments.at(-1)!;
  state.lastSeq = tail.lastSeq;
  state.writtenSeq = state.lastSeq;
  state.tail.startAt(state.lastSeq + 1);
  state.ackedSeq = Math.min(meta.ackedSeq, state.lastSeq);
  state.sealed = meta.sealed;
  state.bytes = state.segments.reduce((sum, segment) => sum + segment.bytes, 0);
}

/** Scans the last segment, keeps its intact prefix and truncates whatever follows. */
async function recoverTail(state: SpoolState, segment: Segment): Promise<Segment> {
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
      state.envelope = { jobId: record.jobId, location: record.location };
    }
    return segment;
  } finally {
    await handle.close();
  }
}

/** The meta file, or what it means when missing (a fresh spool) or damaged. */
async function readMeta(dir: string): Promise<SpoolMeta> {
  const path = join(dir, META_FILE);
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
