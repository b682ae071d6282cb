/**
 * Records as length-prefixed entries: the form the agent keeps them in on disk (its spool
 * segments) and the form a `job.packed` event carries them in, so a batch read from a spool
 * crosses the wire as the bytes it already is, without being decoded and re-encoded per record.
 *
 *   entry   = u32 LE payloadBytes | u32 LE crc32(seq bytes + payload) | u64 LE seq | payload
 *   payload = text form (first byte 0x01) | bytes form (0x02) | v8 form (0xFF, the v8 version tag)
 *
 * The text form holds a record whose data is a well-formed string (the common case: a line of
 * output), because the v8 serializer costs more than the copy itself for those:
 *
 *   0x01 | flags u8 (0) | stream length u8 | location length u16 LE | timeMs f64 LE | jobId f64 LE
 *   | stream | location | data (UTF-8, to the end)
 *
 * The bytes form is the same with tag 0x02 and a Buffer's bytes as they are (`stdout: 'bytes'`
 * output); it decodes to a Buffer.
 *
 * Everything else is the record with short keys through `encodeValue`; coded errors go through
 * `serializeError`, because v8 keeps an Error's message and stack but drops its `code`. A record
 * that carries a `gap` (the warning the agent's spool gives in place of records it lost) takes the
 * v8 form too, so the counts survive.
 *
 * Records of several jobs (a receive's answer) are several runs: each run is consecutive records
 * of one job, numbered without a gap ({@link encodeRecordRuns} / {@link decodeRecordRuns}).
 */
import { crc32 } from '../util/lazy-builtins.js';
import { deserializeError, RjobError, type SerializedError, serializeError } from '../errors.js';
import type { JobRecord, StreamName } from '../job/records.js';
import { isStreamName } from '../job/records.js';
import { ProtocolErrorCode } from '../protocol/protocol-errors.js';
import { decodeValue, encodeValue } from './value-codec.js';

/** Bytes before an entry's payload: length, CRC, sequence number. */
export const RECORD_ENTRY_HEADER_BYTES = 16;

/** The record as stored in the v8 form: short keys, because they are repeated in every entry. */
interface StoredRecord {
  s: StreamName;
  t: number;
  j: number;
  l: string;
  d: unknown;
  e?: 1;
  r?: 1;
  /** A spool's gap warning: how many records it stands for (`SpoolGapRecord.gap` on the agent). */
  g?: object;
}

const TEXT_RECORD = 0x01;
const BYTES_RECORD = 0x02;
/** Fixed part of the text form: tag, flags, stream length, location length (u16), time, job id. */
const TEXT_FIXED_BYTES = 1 + 1 + 1 + 2 + 8 + 8;

/** No lone surrogates: UTF-8 round-trips the string exactly. */
function isWellFormed(text: string): boolean {
  return (text as string & { isWellFormed(): boolean }).isWellFormed();
}

/** A record's stream and location as the compact forms store them. */
interface Prefix {
  stream: string;
  location: string;
  /** Stream (latin1) then location (UTF-8). */
  bytes: Buffer;
  streamBytes: number;
  /** Both fit the fixed header's length fields, and the location round-trips through UTF-8. */
  fits: boolean;
}

/**
 * The last prefix encoded. Records come in runs from one job, so stream and location repeat from
 * one record to the next: they are checked and encoded once a run, not once a record.
 */
let lastPrefix: Prefix | undefined;

function prefixOf(record: JobRecord): Prefix {
  const last = lastPrefix;
  if (last !== undefined && last.stream === record.stream && last.location === record.location) return last;
  const stream = Buffer.from(record.stream, 'latin1');
  const fits =
    record.stream.length <= 0xff && record.location.length <= 0x3fff && isWellFormed(record.location);
  lastPrefix = {
    stream: record.stream,
    location: record.location,
    bytes: Buffer.concat([stream, Buffer.from(record.location, 'utf8')]),
    streamBytes: stream.length,
    fits,
  };
  return lastPrefix;
}

/** Stream and location fit the compact forms' fixed header, and nothing else is to be kept. */
function compactHeader(record: JobRecord): boolean {
  return !record.reason && (record as GapRecord).gap === undefined && prefixOf(record).fits;
}

/** A record that may carry a spool's gap counts (only the agent's spool warnings do). */
type GapRecord = JobRecord & { gap?: object };

/** The compact form (text or bytes) `record` takes, or undefined for the v8 form. */
function compactForm(record: JobRecord): typeof TEXT_RECORD | typeof BYTES_RECORD | undefined {
  const data = record.data;
  if (typeof data === 'string') {
    return compactHeader(record) && isWellFormed(data) ? TEXT_RECORD : undefined;
  }
  return Buffer.isBuffer(data) && compactHeader(record) ? BYTES_RECORD : undefined;
}

/**
 * Writes the compact form of `record` at `at` in `out`, which must have room for
 * {@link maxCompactEntryBytes}; returns the payload's length.
 */
function writeCompact(
  record: JobRecord,
  form: typeof TEXT_RECORD | typeof BYTES_RECORD,
  out: Buffer,
  at: number,
): number {
  const start = at;
  out[at] = form;
  out[at + 1] = 0;
  at += TEXT_FIXED_BYTES;
  const prefix = prefixOf(record);
  const streamBytes = prefix.streamBytes;
  const locationBytes = prefix.bytes.length - streamBytes;
  if (prefix.bytes.length <= 64) {
    // A short copy is cheaper in place than through a native call.
    for (let k = 0; k < prefix.bytes.length; k++) out[at + k] = prefix.bytes[k]!;
  } else {
    prefix.bytes.copy(out, at);
  }
  at += prefix.bytes.length;
  at +=
    form === TEXT_RECORD
      ? out.write(record.data as string, at, 'utf8')
      : (record.data as Buffer).copy(out, at);
  out[start + 2] = streamBytes;
  out.writeUInt16LE(locationBytes, start + 3);
  out.writeDoubleLE(record.timeMs, start + 5);
  out.writeDoubleLE(record.jobId, start + 13);
  return at - start;
}

/** An upper bound on a compact entry's size (UTF-8 needs at most 3 bytes per UTF-16 unit). */
function maxCompactEntryBytes(record: JobRecord, form: typeof TEXT_RECORD | typeof BYTES_RECORD): number {
  const data = form === TEXT_RECORD ? 3 * (record.data as string).length : (record.data as Buffer).length;
  return (
    RECORD_ENTRY_HEADER_BYTES + TEXT_FIXED_BYTES + record.stream.length + 3 * record.location.length + data
  );
}

/** A compact entry's exact size, for growing a buffer only as far as needed. */
function compactEntryBytes(record: JobRecord, form: typeof TEXT_RECORD | typeof BYTES_RECORD): number {
  const data =
    form === TEXT_RECORD ? Buffer.byteLength(record.data as string) : (record.data as Buffer).length;
  return (
    RECORD_ENTRY_HEADER_BYTES +
    TEXT_FIXED_BYTES +
    record.stream.length +
    Buffer.byteLength(record.location) +
    data
  );
}

/** A record's payload (no header). Throws ERR_VALUE_NOT_CLONEABLE for data that cannot cross. */
export function encodeRecordPayload(record: JobRecord): Buffer {
  const form = compactForm(record);
  if (form !== undefined) {
    const out = Buffer.allocUnsafe(maxCompactEntryBytes(record, form));
    return out.subarray(0, writeCompact(record, form, out, 0));
  }
  return encodeValueForm(record);
}

/**
 * One entry with its header left blank, for {@link stampHeader} to fill once the record's number
 * is known. Throws as {@link encodeRecordPayload}.
 */
export function encodeUnstampedEntry(record: JobRecord): Buffer {
  const form = compactForm(record);
  if (form !== undefined) {
    const out = Buffer.allocUnsafe(maxCompactEntryBytes(record, form));
    return out.subarray(
      0,
      RECORD_ENTRY_HEADER_BYTES + writeCompact(record, form, out, RECORD_ENTRY_HEADER_BYTES),
    );
  }
  const payload = encodeValueForm(record);
  const out = Buffer.allocUnsafe(RECORD_ENTRY_HEADER_BYTES + payload.length);
  payload.copy(out, RECORD_ENTRY_HEADER_BYTES);
  return out;
}

function encodeValueForm(record: JobRecord): Buffer {
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
  const gap = (record as GapRecord).gap;
  if (gap !== undefined) stored.g = gap;
  return encodeValue(stored);
}

/**
 * Encodes records as consecutive entries, numbered from `firstSeq`, into one buffer. `sizes`
 * receives each entry's length. Throws ERR_VALUE_NOT_CLONEABLE when a record's data cannot be
 * encoded; the caller decides what to store instead.
 */
export function encodeRecordEntries(
  records: readonly JobRecord[],
  firstSeq: number,
  sizes?: number[],
): Buffer {
  // Sized for one byte per UTF-16 unit (exact for ASCII text); grown when a record needs more.
  let estimate = 16 * 1024;
  for (const record of records) {
    estimate += RECORD_ENTRY_HEADER_BYTES + TEXT_FIXED_BYTES + record.stream.length + record.location.length;
    if (typeof record.data === 'string') estimate += record.data.length;
    else if (Buffer.isBuffer(record.data)) estimate += record.data.length;
  }
  let out = Buffer.allocUnsafe(estimate);
  let at = 0;
  const room = (bytes: number): void => {
    if (at + bytes <= out.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(out.length * 2, at + bytes));
    out.copy(bigger, 0, 0, at);
    out = bigger;
  };
  for (let i = 0; i < records.length; i++) {
    const record = records[i]!;
    let payloadBytes: number;
    const form = compactForm(record);
    if (form !== undefined) {
      if (at + maxCompactEntryBytes(record, form) > out.length) room(compactEntryBytes(record, form));
      payloadBytes = writeCompact(record, form, out, at + RECORD_ENTRY_HEADER_BYTES);
    } else {
      const payload = encodeValueForm(record);
      room(RECORD_ENTRY_HEADER_BYTES + payload.length);
      payload.copy(out, at + RECORD_ENTRY_HEADER_BYTES);
      payloadBytes = payload.length;
    }
    stampHeader(out, at, payloadBytes, firstSeq + i);
    at += RECORD_ENTRY_HEADER_BYTES + payloadBytes;
    sizes?.push(RECORD_ENTRY_HEADER_BYTES + payloadBytes);
  }
  return out.subarray(0, at);
}

/** Fills the header of the entry at `at` whose payload (`payloadBytes` long) follows it. */
export function stampHeader(out: Buffer, at: number, payloadBytes: number, seq: number): void {
  out.writeUInt32LE(payloadBytes, at);
  out.writeUInt32LE(seq % 0x1_0000_0000, at + 8);
  out.writeUInt32LE(Math.floor(seq / 0x1_0000_0000), at + 12);
  out.writeUInt32LE(crc32(out.subarray(at + 8, at + RECORD_ENTRY_HEADER_BYTES + payloadBytes)), at + 4);
}

/** True for a payload in the text form, which decodes to exactly the record that was encoded. */
export function isTextPayload(payload: Uint8Array): boolean {
  return payload[0] === TEXT_RECORD;
}

/**
 * True for a payload (starting at `at`, e.g. behind an entry's header) in a compact form (text or
 * bytes): it decodes to exactly the record that was encoded, so a reader may be handed that record
 * instead of a decoded copy.
 */
export function isCompactPayload(payload: Uint8Array, at = 0): boolean {
  return payload[at] === TEXT_RECORD || payload[at] === BYTES_RECORD;
}

/** The last stream and location decoded, with the bytes they came from (a copy). */
let lastDecoded: { bytes: Buffer; streamBytes: number; stream: string; location: string } | undefined;

/**
 * Stream and location of a compact payload. A run of records repeats them, so when the bytes are
 * those of the record before, its strings are reused instead of decoded again.
 */
function decodedPrefix(
  bytes: Buffer,
  streamAt: number,
  locationAt: number,
  dataAt: number,
): { stream: string; location: string } {
  const length = dataAt - streamAt;
  const last = lastDecoded;
  if (last !== undefined && last.bytes.length === length && last.streamBytes === locationAt - streamAt) {
    let same = true;
    for (let k = 0; k < length; k++) {
      if (last.bytes[k] !== bytes[streamAt + k]) {
        same = false;
        break;
      }
    }
    if (same) return last;
  }
  const decoded = {
    bytes: Buffer.from(bytes.subarray(streamAt, dataAt)),
    streamBytes: locationAt - streamAt,
    stream: bytes.toString('latin1', streamAt, locationAt),
    location: bytes.toString('utf8', locationAt, dataAt),
  };
  // Long locations are rare; comparing them byte by byte would cost more than decoding.
  if (length <= 256) lastDecoded = decoded;
  return decoded;
}

/**
 * Decodes one payload. The payload may be a view of a reused buffer: the text form copies what it
 * keeps (strings); the v8 form is decoded from a copy, as a decoded typed array would alias it.
 */
export function decodeRecordPayload(payload: Uint8Array, seq: number): JobRecord {
  const bytes = Buffer.isBuffer(payload)
    ? payload
    : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  if (bytes[0] === TEXT_RECORD || bytes[0] === BYTES_RECORD) {
    if (bytes.length < TEXT_FIXED_BYTES) throw new RangeError('record shorter than its header');
    const streamAt = TEXT_FIXED_BYTES;
    const locationAt = streamAt + bytes[2]!;
    const dataAt = locationAt + bytes.readUInt16LE(3);
    if (dataAt > bytes.length) throw new RangeError('record shorter than its header');
    const prefix = decodedPrefix(bytes, streamAt, locationAt, dataAt);
    return {
      stream: prefix.stream as StreamName,
      // The bytes form is copied out: `payload` may be a view of a buffer that is reused.
      data: bytes[0] === TEXT_RECORD ? bytes.toString('utf8', dataAt) : Buffer.from(bytes.subarray(dataAt)),
      seq,
      timeMs: bytes.readDoubleLE(5),
      jobId: bytes.readDoubleLE(13),
      location: prefix.location,
    };
  }
  const stored = decodeValue<StoredRecord>(Buffer.from(bytes));
  const record: JobRecord = {
    stream: stored.s,
    data: stored.e ? deserializeError(stored.d as SerializedError) : stored.d,
    seq,
    timeMs: stored.t,
    jobId: stored.j,
    location: stored.l,
  };
  if (stored.r) record.reason = true;
  if (stored.g !== undefined) (record as GapRecord).gap = stored.g;
  return record;
}

/**
 * Decodes a run of entries (a `job.packed` event's `entries`), checking every length, that the
 * sequence numbers run on without a gap (a spool's gap warning, numbered as the last record it
 * stands for, runs on from the first), and each record's shape, but not the CRCs (the link
 * below already guarantees integrity). Anything else is ERR_MESSAGE_INVALID.
 */
export function decodeRecordEntries(bytes: Uint8Array): JobRecord[] {
  const buffer = Buffer.isBuffer(bytes)
    ? bytes
    : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: JobRecord[] = [];
  let at = 0;
  let expected = -1;
  try {
    while (at < buffer.length) {
      if (at + RECORD_ENTRY_HEADER_BYTES > buffer.length) throw new RangeError('entry header cut off');
      const payloadBytes = buffer.readUInt32LE(at);
      const seq = buffer.readUInt32LE(at + 8) + buffer.readUInt32LE(at + 12) * 0x1_0000_0000;
      const end = at + RECORD_ENTRY_HEADER_BYTES + payloadBytes;
      if (payloadBytes === 0 || end > buffer.length) throw new RangeError('entry longer than the batch');
      const record = decodeRecordPayload(buffer.subarray(at + RECORD_ENTRY_HEADER_BYTES, end), seq);
      // A spool's gap warning stands for the records it lost: numbered as the last of them, it
      // follows on from the record before it exactly when its counts say so.
      if (expected !== -1 && seq !== expected && !gapSpans(record, expected, seq))
        throw new RangeError(`record ${seq} where ${expected} was due`);
      if (
        !isStreamName(record.stream) ||
        typeof record.location !== 'string' ||
        !Number.isFinite(record.timeMs)
      ) {
        throw new RangeError(`record ${seq} is malformed`);
      }
      out.push(record);
      expected = seq + 1;
      at = end;
    }
  } catch (error) {
    throw new RjobError(
      ProtocolErrorCode.MessageInvalid,
      `Packed records are malformed: ${(error as Error).message}.`,
      {
        cause: error,
        details: { bytes: buffer.length, offset: at },
      },
    );
  }
  return out;
}

/**
 * Records of any number of jobs (each job's in order, as a receive returns them) as runs: a new run
 * starts wherever the next record is not the one after the last of the same job (another job, a
 * Failed job's reason record with seq 0, a gap in the numbering). Throws as
 * {@link encodeRecordEntries}.
 */
export function encodeRecordRuns(records: readonly JobRecord[]): Buffer[] {
  const runs: Buffer[] = [];
  let start = 0;
  for (let i = 1; i <= records.length; i++) {
    const before = records[i - 1]!;
    const next = records[i];
    if (
      next !== undefined &&
      next.seq === before.seq + 1 &&
      next.jobId === before.jobId &&
      !next.reason &&
      !before.reason
    ) {
      continue;
    }
    const run = records.slice(start, i);
    runs.push(encodeRecordEntries(run, run[0]!.seq));
    start = i;
  }
  return runs;
}

/**
 * The records of runs (a `job.receive` answer's `entries`), in order. Anything but an array of
 * byte arrays, each whole entries (see {@link decodeRecordEntries}), is ERR_MESSAGE_INVALID.
 */
export function decodeRecordRuns(runs: unknown): JobRecord[] {
  if (!Array.isArray(runs)) {
    throw new RjobError(ProtocolErrorCode.MessageInvalid, 'Packed record runs are not an array.');
  }
  const out: JobRecord[] = [];
  for (const run of runs) {
    if (!(run instanceof Uint8Array)) {
      throw new RjobError(ProtocolErrorCode.MessageInvalid, 'A packed record run is not bytes.');
    }
    for (const record of decodeRecordEntries(run)) out.push(record);
  }
  return out;
}

/** `record` is a gap warning for exactly the records `fromSeq` to `toSeq`. */
function gapSpans(record: JobRecord, fromSeq: number, toSeq: number): boolean {
  const gap = (record as GapRecord).gap as { fromSeq?: unknown; toSeq?: unknown } | undefined;
  return typeof gap === 'object' && gap !== null && gap.fromSeq === fromSeq && gap.toSeq === toSeq;
}

function isCodedError(value: unknown): value is Error {
  return (
    (value instanceof Error || RjobError.is(value)) && typeof (value as { code?: unknown }).code === 'string'
  );
}
