/**
 * The bytes of a spool segment. A segment is a run of entries, each
 *
 *   u32 LE payloadBytes | u32 LE crc32(seq bytes + payload) | u64 LE seq | payload
 *
 * where the payload is a record in one of @rjob/core's entry forms (codec/record-entries.ts: compact
 * text for lines, compact bytes for Buffers, v8 for the rest), the same bytes a `job.packed` event carries. The length prefix finds entry
 * boundaries; the CRC and the expected sequence number tell a complete entry from a torn or
 * zero-filled tail after a crash.
 *
 * Resync: when the entry at some offset is damaged (bytes flipped, a block zeroed), the reader
 * does not give up on the rest of the segment. {@link findNextEntry} looks, byte by byte after the
 * damage, for the next place where an intact entry starts: its seq field holds a number after the
 * damaged one (and within what the rest of the file can hold), its length fits in the file, and
 * its CRC (over seq and payload) matches. The seq field is the sync marker: the reader knows which
 * numbers may come next, so a random 8-byte match is rare, and the CRC confirms it. Only the
 * damaged records are lost. This costs nothing on the normal read path (the header is unchanged);
 * only a reader that meets damage pays for the scan.
 */
import type { FileHandle } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import { type JobRecord, RjobError } from '@rjob/core';
import {
  decodeRecordPayload,
  encodeRecordPayload,
  encodeUnstampedEntry,
  RECORD_ENTRY_HEADER_BYTES,
  stampHeader,
} from '@rjob/core/codec';
import { AgentErrorCode } from '../errors.js';

export const HEADER_BYTES = RECORD_ENTRY_HEADER_BYTES;

export const encodeRecord = encodeRecordPayload;
export const decodeRecord = decodeRecordPayload;
/** Entries above this are refused on append and treated as corruption when read. */
export const MAX_ENTRY_PAYLOAD_BYTES = 1024 * 1024 * 1024;
const SEGMENT_NAME = /^(\d{16})\.seg$/;

export function segmentFileName(firstSeq: number): string {
  return `${String(firstSeq).padStart(16, '0')}.seg`;
}

/** The first sequence number a segment file holds, or undefined for other files. */
export function parseSegmentFileName(name: string): number | undefined {
  const match = SEGMENT_NAME.exec(name);
  return match ? Number(match[1]) : undefined;
}

/**
 * A whole entry for `record`: {@link HEADER_BYTES} left blank, then the payload. One buffer per
 * record on the append path (instead of a header and a payload); {@link stampEntry} fills the
 * header once the record's number is known.
 */
export function encodeEntry(record: JobRecord): Buffer {
  return encodeUnstampedEntry(record);
}

/**
 * Fills an entry's header for sequence number `seq`: the same bytes as {@link encodeHeader}, with
 * one CRC pass, because the seq field sits right before the payload.
 */
export function stampEntry(entry: Buffer, seq: number): void {
  stampHeader(entry, 0, entry.length - HEADER_BYTES, seq);
}

export function encodeHeader(seq: number, payload: Uint8Array): Buffer {
  const header = Buffer.allocUnsafe(HEADER_BYTES);
  header.writeUInt32LE(payload.length, 0);
  header.writeBigUInt64LE(BigInt(seq), 8);
  header.writeUInt32LE(crc32(payload, crc32(header.subarray(8, 16))), 4);
  return header;
}

/** One entry as found in a segment. `payload` is only valid until the reader reads again. */
export interface ScannedEntry {
  seq: number;
  offset: number;
  /** Offset of the next entry. */
  end: number;
  payload: Buffer;
}

/**
 * Reads entries from one segment file front to back through a fixed read-ahead buffer, so memory
 * stays at one buffer (plus one entry when an entry is larger than the buffer).
 */
export class SegmentScanner {
  readonly #handle: FileHandle;
  readonly #endOffset: number;
  readonly #buffer: Buffer;
  #bufferOffset = 0;
  #bufferBytes = 0;

  constructor(handle: FileHandle, endOffset: number, readAheadBytes = 256 * 1024) {
    this.#handle = handle;
    this.#endOffset = endOffset;
    this.#buffer = Buffer.allocUnsafe(readAheadBytes);
  }

  /**
   * The entry at `offset` if a complete, intact one with sequence number `expectedSeq` is there;
   * undefined at the end of the data or at a torn, corrupt or out-of-sequence entry. Without
   * `verify`, the CRC is not checked (for entries this process wrote itself).
   */
  async entryAt(offset: number, expectedSeq: number, verify = true): Promise<ScannedEntry | undefined> {
    if (offset + HEADER_BYTES > this.#endOffset) return undefined;
    const header = await this.#bytes(offset, HEADER_BYTES);
    if (!header) return undefined;
    const payloadBytes = header.readUInt32LE(0);
    const crc = header.readUInt32LE(4);
    const seq = header.readUInt32LE(8) + header.readUInt32LE(12) * 0x1_0000_0000;
    const end = offset + HEADER_BYTES + payloadBytes;
    if (seq !== expectedSeq || payloadBytes > MAX_ENTRY_PAYLOAD_BYTES || end > this.#endOffset)
      return undefined;
    // Read the CRC now: #bytes may refill the buffer the header is a view of.
    const seqCrc = verify ? crc32(header.subarray(8, 16)) : 0;
    const payload = await this.#bytes(offset + HEADER_BYTES, payloadBytes);
    if (!payload || (verify && crc32(payload, seqCrc) !== crc)) return undefined;
    return { seq, offset, end, payload };
  }

  /** `length` bytes at `offset`, or undefined when the file ends sooner. */
  async #bytes(offset: number, length: number): Promise<Buffer | undefined> {
    const start = offset - this.#bufferOffset;
    if (start >= 0 && start + length <= this.#bufferBytes)
      return this.#buffer.subarray(start, start + length);
    if (length > this.#buffer.length) {
      const big = Buffer.allocUnsafe(length);
      return (await readFully(this.#handle, big, length, offset)) === length ? big : undefined;
    }
    const want = Math.min(this.#buffer.length, this.#endOffset - offset);
    const got = await readFully(this.#handle, this.#buffer, want, offset);
    this.#bufferOffset = offset;
    this.#bufferBytes = got;
    return got >= length ? this.#buffer.subarray(0, length) : undefined;
  }
}

/** Reads until `length` bytes are in or the file ends; returns how many were read. */
export async function readFully(
  handle: FileHandle,
  into: Buffer,
  length: number,
  position: number,
): Promise<number> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(into, done, length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/** Where reading can go on after damage: the next intact entry, or none. */
export interface ResyncPoint {
  offset: number;
  seq: number;
}

const RESYNC_CHUNK_BYTES = 1024 * 1024;

/**
 * The first intact entry at or after byte `from` (and before `endOffset`) whose sequence number
 * is greater than `afterSeq` and at most `maxSeq` (see the resync note at the top). Undefined when
 * the rest of the file holds none. Reads the file in chunks; memory stays at one chunk (and one
 * entry while a candidate's CRC is checked).
 */
export async function findNextEntry(
  handle: FileHandle,
  from: number,
  endOffset: number,
  afterSeq: number,
  maxSeq: number,
): Promise<ResyncPoint | undefined> {
  const chunk = Buffer.allocUnsafe(RESYNC_CHUNK_BYTES);
  const verifier = new SegmentScanner(handle, endOffset, 64 * 1024);
  for (let base = from; base + HEADER_BYTES <= endOffset; ) {
    const got = await readFully(handle, chunk, Math.min(chunk.length, endOffset - base), base);
    if (got < HEADER_BYTES) return undefined;
    const last = got - HEADER_BYTES;
    for (let at = 0; at <= last; at++) {
      const low = chunk.readUInt32LE(at + 8);
      const seq = low + chunk.readUInt32LE(at + 12) * 0x1_0000_0000;
      if (seq <= afterSeq || seq > maxSeq) continue;
      const payloadBytes = chunk.readUInt32LE(at);
      if (payloadBytes > MAX_ENTRY_PAYLOAD_BYTES || base + at + HEADER_BYTES + payloadBytes > endOffset)
        continue;
      if (await verifier.entryAt(base + at, seq, true)) return { offset: base + at, seq };
    }
    // The next chunk starts where a header could still begin.
    base += last + 1;
  }
  return undefined;
}

export function corruptSegment(path: string, offset: number, seq: number): RjobError {
  return new RjobError(
    AgentErrorCode.SpoolCorrupt,
    `Spool segment ${path} has no valid entry for record ${seq} at byte ${offset}.`,
    { details: { path, offset, seq } },
  );
}
