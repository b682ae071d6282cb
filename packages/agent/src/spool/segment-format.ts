/**
 * The bytes of a spool segment. A segment is a run of entries, each
 *
 *   u32 LE payloadBytes | u32 LE crc32(seq bytes + payload) | u64 LE seq | payload
 *
 * where the payload is a record encoded with `encodeValue`. The length prefix finds entry
 * boundaries; the CRC and the expected sequence number tell a complete entry from a torn or
 * zero-filled tail after a crash.
 */
import type { FileHandle } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import {
  decodeValue,
  deserializeError,
  encodeValue,
  type JobRecord,
  RjobError,
  type SerializedError,
  type StreamName,
  serializeError,
} from '@rjob/core';
import { AgentErrorCode } from '../errors.js';

export const HEADER_BYTES = 16;
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

/** The record as stored: short keys, because they are repeated in every entry. */
interface StoredRecord {
  s: StreamName;
  t: number;
  j: number;
  l: string;
  d: unknown;
  /** `d` is a SerializedError: v8 keeps an Error's message and stack but drops its `code`. */
  e?: 1;
  r?: 1;
}

/**
 * First byte of a payload in the compact text form. A v8-serialized payload starts with 0xFF (its
 * version tag), so the two never mix up, and spools written before this form still read.
 */
const TEXT_RECORD = 0x01;
/** Fixed part of the text form: tag, flags, stream length, location length (u16), time, job id. */
const TEXT_FIXED_BYTES = 1 + 1 + 1 + 2 + 8 + 8;

/**
 * Lines of text are nearly every record a job writes, and the v8 serializer costs more than the
 * copy itself for them (a serializer object per record). So a record whose data is a well-formed
 * string (UTF-8 keeps it exactly) is stored as
 *
 *   0x01 | flags u8 (0) | stream length u8 | location length u16 LE | timeMs f64 LE | jobId f64 LE
 *   | stream | location | data (UTF-8, to the end)
 *
 * and everything else through encodeValue.
 */
function encodeTextRecord(record: JobRecord<string>, headroom = 0): Buffer | undefined {
  const { stream, location, data } = record;
  if (record.reason || !isWellFormed(data) || !isWellFormed(location)) return undefined;
  const streamBytes = Buffer.byteLength(stream);
  const locationBytes = Buffer.byteLength(location);
  if (streamBytes > 0xff || locationBytes > 0xffff) return undefined;
  const head = headroom + TEXT_FIXED_BYTES + streamBytes + locationBytes;
  const out = Buffer.allocUnsafe(head + Buffer.byteLength(data));
  const base = headroom;
  out[base] = TEXT_RECORD;
  out[base + 1] = 0;
  out[base + 2] = streamBytes;
  out.writeUInt16LE(locationBytes, base + 3);
  out.writeDoubleLE(record.timeMs, base + 5);
  out.writeDoubleLE(record.jobId, base + 13);
  let at = base + TEXT_FIXED_BYTES;
  at += out.write(stream, at, 'utf8');
  at += out.write(location, at, 'utf8');
  out.write(data, at, 'utf8');
  return out;
}

/** No lone surrogates: UTF-8 round-trips the string exactly (ES2024, in every Node we support). */
function isWellFormed(text: string): boolean {
  return (text as string & { isWellFormed(): boolean }).isWellFormed();
}

function decodeTextRecord(payload: Uint8Array, seq: number): JobRecord {
  const bytes = Buffer.isBuffer(payload)
    ? payload
    : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  const streamBytes = bytes[2]!;
  const locationBytes = bytes.readUInt16LE(3);
  const streamAt = TEXT_FIXED_BYTES;
  const locationAt = streamAt + streamBytes;
  const dataAt = locationAt + locationBytes;
  if (dataAt > bytes.length) throw new RangeError('text record shorter than its header');
  return {
    stream: bytes.toString('utf8', streamAt, locationAt) as StreamName,
    data: bytes.toString('utf8', dataAt),
    seq,
    timeMs: bytes.readDoubleLE(5),
    jobId: bytes.readDoubleLE(13),
    location: bytes.toString('utf8', locationAt, dataAt),
  };
}

/** True for a payload in the text form, which decodes to exactly the record that was encoded. */
export function isTextPayload(payload: Uint8Array): boolean {
  return payload[0] === TEXT_RECORD;
}

export function encodeRecord(record: JobRecord): Buffer {
  if (typeof record.data === 'string') {
    const text = encodeTextRecord(record as JobRecord<string>);
    if (text) return text;
  }
  const stored: StoredRecord = {
    s: record.stream,
    t: record.timeMs,
    j: record.jobId,
    l: record.location,
    d: record.data,
  };
  if (isCodedError(record.data)) {
    stored.d = serializeError(record.data);
    stored.e = 1;
  }
  if (record.reason) stored.r = 1;
  return encodeValue(stored);
}

/**
 * Decodes an entry's payload. The payload may be a view of a reused read buffer: the text form
 * copies what it keeps (strings); the v8 form is decoded from a copy, because a decoded typed
 * array would otherwise alias that buffer.
 */
export function decodeRecord(payload: Uint8Array, seq: number): JobRecord {
  if (payload[0] === TEXT_RECORD) return decodeTextRecord(payload, seq);
  const stored = decodeValue<StoredRecord>(Buffer.from(payload));
  const record: JobRecord = {
    stream: stored.s,
    data: stored.e ? deserializeError(stored.d as SerializedError) : stored.d,
    seq,
    timeMs: stored.t,
    jobId: stored.j,
    location: stored.l,
  };
  if (stored.r) record.reason = true;
  return record;
}

function isCodedError(value: unknown): value is Error {
  return (
    (value instanceof Error || RjobError.is(value)) && typeof (value as { code?: unknown }).code === 'string'
  );
}

/**
 * A whole entry for `record`: {@link HEADER_BYTES} left blank, then the payload. One buffer per
 * record on the append path (instead of a header and a payload); {@link stampEntry} fills the
 * header once the record's number is known.
 */
export function encodeEntry(record: JobRecord): Buffer {
  if (typeof record.data === 'string') {
    const text = encodeTextRecord(record as JobRecord<string>, HEADER_BYTES);
    if (text) return text;
  }
  const payload = encodeRecord(record);
  const entry = Buffer.allocUnsafe(HEADER_BYTES + payload.length);
  payload.copy(entry, HEADER_BYTES);
  return entry;
}

/** The payload part of an entry from {@link encodeEntry}. */
export function entryPayload(entry: Buffer): Buffer {
  return entry.subarray(HEADER_BYTES);
}

/**
 * Fills an entry's header for sequence number `seq`: the same bytes as {@link encodeHeader}, with
 * one CRC pass, because the seq field sits right before the payload.
 */
export function stampEntry(entry: Buffer, seq: number): void {
  entry.writeUInt32LE(entry.length - HEADER_BYTES, 0);
  entry.writeUInt32LE(seq % 0x1_0000_0000, 8);
  entry.writeUInt32LE(Math.floor(seq / 0x1_0000_0000), 12);
  entry.writeUInt32LE(crc32(entry.subarray(8)), 4);
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

async function readFully(
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

export function corruptSegment(path: string, offset: number, seq: number): RjobError {
  return new RjobError(
    AgentErrorCode.SpoolCorrupt,
    `Spool segment ${path} has no valid entry for record ${seq} at byte ${offset}.`,
    { details: { path, offset, seq } },
  );
}
