import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { ErrorCode, RjobError } from '../errors.js';
import type { JobRecord, StreamName } from '../job/records.js';
import { ProtocolErrorCode } from '../protocol/protocol-errors.js';
import {
  decodeRecordEntries,
  decodeRecordPayload,
  decodeRecordRuns,
  encodeRecordEntries,
  encodeRecordPayload,
  encodeRecordRuns,
  encodeUnstampedEntry,
  isCompactPayload,
  isTextPayload,
  RECORD_ENTRY_HEADER_BYTES,
  stampHeader,
} from './record-entries.js';
import { encodeValue } from './value-codec.js';

function record(seq: number, data: unknown, stream: StreamName = 'output'): JobRecord {
  return { stream, data, seq, timeMs: 1_700_000_000_000 + seq + 0.25, jobId: 42, location: 'hôst-ä' };
}

/** Records numbered from `firstSeq`, as the encoder numbers them. */
function numbered(data: unknown[], firstSeq = 1): JobRecord[] {
  return data.map((d, i) => record(firstSeq + i, d));
}

/** The error a call throws (fails the test when it does not throw). */
function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected a throw');
}

function expectInvalid(bytes: Uint8Array, message?: RegExp): void {
  const error = thrown(() => decodeRecordEntries(bytes));
  expect(RjobError.hasCode(error, ProtocolErrorCode.MessageInvalid)).toBe(true);
  if (message) expect((error as Error).message).toMatch(message);
}

const TEXTS = [
  'plain ASCII line',
  'grüße, naïve café — ½ ∑ 東京',
  'emoji 😀🚀👩‍👩‍👧 and a flag 🇩🇪',
  '',
  `${'x'.repeat(200_000)}→end`,
];

describe('record entries: round trip', () => {
  it('keeps text records exactly (ASCII, multi-byte UTF-8, emoji, empty, long) in the text form', () => {
    const records = numbered(TEXTS, 5);
    records[1]!.stream = 'error';
    records[2]!.stream = 'information';
    const bytes = encodeRecordEntries(records, 5);
    const back = decodeRecordEntries(bytes);
    expect(back).toEqual(records);
    for (const each of records) {
      const payload = encodeRecordPayload(each);
      expect(isTextPayload(payload)).toBe(true);
      expect(payload[0]).toBe(0x01);
      expect(decodeRecordPayload(payload, each.seq)).toEqual(each);
    }
  });

  it('keeps non-string data (objects, Uint8Array, Date, Map, numbers, null) in the v8 form', () => {
    const data = [
      { a: 1, nested: { list: [1, 'two', null] } },
      new Uint8Array([0, 1, 2, 250]),
      new Date(1_700_000_123_456),
      new Map<unknown, unknown>([
        ['k', { v: 1 }],
        [2, 'two'],
      ]),
      12.5,
      null,
      [1, 2, 3],
    ];
    const records = numbered(data);
    const back = decodeRecordEntries(encodeRecordEntries(records, 1));
    expect(back).toEqual(records);
    // A plain Uint8Array stays one (the bytes form is for Buffers only).
    expect(Buffer.isBuffer(back[1]!.data)).toBe(false);
    expect(back[1]!.data).toBeInstanceOf(Uint8Array);
    expect([...(back[1]!.data as Uint8Array)]).toEqual([0, 1, 2, 250]);
    expect(back[2]!.data).toBeInstanceOf(Date);
    expect((back[2]!.data as Date).getTime()).toBe(1_700_000_123_456);
    expect(back[3]!.data).toBeInstanceOf(Map);
    expect((back[3]!.data as Map<unknown, unknown>).get('k')).toEqual({ v: 1 });
    for (const each of records) {
      const payload = encodeRecordPayload(each);
      expect(isTextPayload(payload)).toBe(false);
      expect(isCompactPayload(payload)).toBe(false);
      expect(payload[0]).toBe(0xff);
    }
  });

  it('keeps Buffer data (empty, binary, invalid UTF-8, 1 MiB) exactly in the bytes form', () => {
    const big = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
    const data = [Buffer.alloc(0), Buffer.from([0, 0xff, 0xc3, 0x28, 10, 13]), big];
    const records = numbered(data, 9);
    records[1]!.stream = 'error';
    const bytes = encodeRecordEntries(records, 9);
    const back = decodeRecordEntries(bytes);
    expect(back).toEqual(records);
    for (const [i, each] of back.entries()) {
      expect(Buffer.isBuffer(each.data)).toBe(true);
      expect((each.data as Buffer).equals(data[i]!)).toBe(true);
      const payload = encodeRecordPayload(records[i]!);
      expect(payload[0]).toBe(0x02);
      expect(isCompactPayload(payload)).toBe(true);
      expect(isTextPayload(payload)).toBe(false);
      expect(decodeRecordPayload(payload, each.seq)).toEqual(records[i]);
    }
    // The one-record encoders agree with the batch encoder byte for byte.
    const entry = encodeUnstampedEntry(records[1]!);
    stampHeader(entry, 0, entry.length - RECORD_ENTRY_HEADER_BYTES, 10);
    expect(entry.equals(encodeRecordEntries([records[1]!], 10))).toBe(true);
  });

  it('records whose stream and location change from one to the next keep their own', () => {
    // Same lengths with other bytes, and the same bytes split otherwise between stream and location.
    const places = ['web-1', 'web-2', 'wéb-2 ✓', '', 'web-1', 'l'.repeat(300), 'web-1', 'web-12', 'web-12'];
    const streams: StreamName[] = [
      'output',
      'output',
      'error',
      'output',
      'warning',
      'verbose',
      'output',
      'error',
      'debug',
    ];
    const records = places.map((location, i) => ({
      ...record(i + 1, i % 2 ? Buffer.from(`b${i}`) : `t${i}`, streams[i]),
      location,
    }));
    expect(decodeRecordEntries(encodeRecordEntries(records, 1))).toEqual(records);
    for (const each of records)
      expect(decodeRecordPayload(encodeRecordPayload(each), each.seq)).toEqual(each);
  });

  it('a decoded Buffer is a copy: changing the entry bytes afterwards does not change it', () => {
    const bytes = encodeRecordEntries(numbered([Buffer.from('abc')]), 1);
    const [back] = decodeRecordEntries(bytes);
    bytes.fill(0);
    expect((back!.data as Buffer).toString()).toBe('abc');
  });

  it('a Buffer given as a reason, or with an over-long location, takes the v8 form and round-trips', () => {
    const records: JobRecord[] = [
      { ...record(1, Buffer.from('why')), reason: true },
      { ...record(2, Buffer.from('far')), location: 'l'.repeat(0x4000) },
    ];
    const back = decodeRecordEntries(encodeRecordEntries(records, 1));
    expect(back).toEqual(records);
    for (const each of records) expect(encodeRecordPayload(each)[0]).toBe(0xff);
  });

  it('a coded RjobError as data keeps its code, message and details', () => {
    const error = new RjobError('ERR_SOMETHING_ODD', 'it went odd', { details: { where: 'here' } });
    const [back] = decodeRecordEntries(encodeRecordEntries([record(1, error, 'error')], 1));
    expect(RjobError.is(back!.data)).toBe(true);
    expect(back!.data).toMatchObject({ code: 'ERR_SOMETHING_ODD', message: 'it went odd' });
    expect((back!.data as RjobError).details).toEqual({ where: 'here' });
    expect(back!.stream).toBe('error');
  });

  it('`reason: true` survives (for text data too, which then takes the v8 form)', () => {
    const reason = new RjobError(ErrorCode.JobThrew, 'kaput');
    const records: JobRecord[] = [
      { ...record(1, reason, 'error'), reason: true },
      { ...record(2, 'a reason given as text', 'error'), reason: true },
      record(3, 'no reason', 'error'),
    ];
    const back = decodeRecordEntries(encodeRecordEntries(records, 1));
    expect(back[0]!.reason).toBe(true);
    expect(back[0]!.data).toMatchObject({ code: ErrorCode.JobThrew, message: 'kaput' });
    expect(back[1]!.reason).toBe(true);
    expect(back[1]!.data).toBe('a reason given as text');
    expect(back[2]!.reason).toBeUndefined();
    expect('reason' in back[2]!).toBe(false);
    expect(isTextPayload(encodeRecordPayload(records[1]!))).toBe(false);
  });

  it('a string with a lone surrogate goes through the v8 form and round-trips exactly', () => {
    const lone = `before \ud800 after`;
    const trailing = `ends with a high half \ud83d`;
    const records = numbered([lone, trailing]);
    for (const each of records) expect(isTextPayload(encodeRecordPayload(each))).toBe(false);
    const back = decodeRecordEntries(encodeRecordEntries(records, 1));
    expect(back.map((r) => r.data)).toEqual([lone, trailing]);
    expect((back[0]!.data as string).charCodeAt(7)).toBe(0xd800);
    // A location with a lone surrogate is kept exactly too.
    const odd = { ...record(1, 'text'), location: 'host-\udc00' };
    expect(decodeRecordEntries(encodeRecordEntries([odd], 1))).toEqual([odd]);
  });

  it('decodes a plain Uint8Array view at an offset, and decoded values do not alias the input', () => {
    const records = numbered(['first', Buffer.from('binary'), 'third']);
    const bytes = encodeRecordEntries(records, 1);
    const backing = new Uint8Array(bytes.length + 10);
    backing.set(bytes, 7);
    const view = new Uint8Array(backing.buffer, 7, bytes.length);
    const back = decodeRecordEntries(view);
    expect(back.map((r) => r.seq)).toEqual([1, 2, 3]);
    expect(back[0]!.data).toBe('first');
    backing.fill(0);
    expect(Buffer.from(back[1]!.data as Uint8Array).toString()).toBe('binary');
    expect(back[2]!.data).toBe('third');
  });

  it('numbers past 2^32 are stored and read back in full', () => {
    const firstSeq = 2 ** 32 + 5;
    const records = numbered(['a', { b: 1 }], firstSeq);
    const bytes = encodeRecordEntries(records, firstSeq);
    expect(bytes.readUInt32LE(8)).toBe(5);
    expect(bytes.readUInt32LE(12)).toBe(1);
    expect(decodeRecordEntries(bytes).map((r) => r.seq)).toEqual([firstSeq, firstSeq + 1]);
  });
});

describe('record entries: layout', () => {
  const mixed = (): JobRecord[] =>
    numbered(['one', { two: 2 }, '', 'vier ✓', new Map([[1, 1]]), 'x'.repeat(70_000)], 10);

  it('encodeRecordEntries equals the single entries concatenated, with the sizes reported', () => {
    const records = mixed();
    const sizes: number[] = [];
    const bytes = encodeRecordEntries(records, 10, sizes);
    expect(sizes).toHaveLength(records.length);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(bytes.length);
    const singles = records.map((each, i) => {
      const single = encodeRecordEntries([each], 10 + i);
      expect(single.length).toBe(sizes[i]);
      const payload = encodeRecordPayload(each);
      expect(single.length).toBe(RECORD_ENTRY_HEADER_BYTES + payload.length);
      expect(single.subarray(RECORD_ENTRY_HEADER_BYTES).equals(payload)).toBe(true);
      return single;
    });
    expect(bytes.equals(Buffer.concat(singles))).toBe(true);
    // Every entry's length field is its payload's size.
    let at = 0;
    for (const size of sizes) {
      expect(bytes.readUInt32LE(at)).toBe(size - RECORD_ENTRY_HEADER_BYTES);
      at += size;
    }
  });

  it('grows its buffer for text that takes more bytes than characters, and stays exact', () => {
    // '✓' is one UTF-16 unit and three UTF-8 bytes: three times the first size estimate.
    const records = numbered(
      Array.from({ length: 1500 }, (_, i) => (i % 3 === 2 ? { i } : `${i} ${'✓'.repeat(100)} 😀`)),
      1,
    );
    const sizes: number[] = [];
    const bytes = encodeRecordEntries(records, 1, sizes);
    expect(bytes.equals(Buffer.concat(records.map((each, i) => encodeRecordEntries([each], 1 + i))))).toBe(
      true,
    );
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(bytes.length);
    expect(decodeRecordEntries(bytes)).toEqual(records);
  });

  it('an unstamped entry, once stamped, is the same bytes as the encoded one', () => {
    for (const [i, each] of mixed().entries()) {
      const entry = encodeUnstampedEntry(each);
      stampHeader(entry, 0, entry.length - RECORD_ENTRY_HEADER_BYTES, 10 + i);
      expect(entry.equals(encodeRecordEntries([each], 10 + i))).toBe(true);
    }
  });

  it('the header CRC is crc32 over the seq bytes and the payload, as stampHeader computes it', () => {
    const records = mixed();
    const sizes: number[] = [];
    const bytes = encodeRecordEntries(records, 10, sizes);
    let at = 0;
    for (const [i, size] of sizes.entries()) {
      const entry = bytes.subarray(at, at + size);
      const payloadBytes = entry.readUInt32LE(0);
      const seq = entry.readUInt32LE(8) + entry.readUInt32LE(12) * 2 ** 32;
      expect(seq).toBe(10 + i);
      expect(entry.readUInt32LE(4)).toBe(crc32(entry.subarray(8)));
      // stampHeader on a copy whose header is blanked computes the same header.
      const copy = Buffer.from(entry);
      copy.fill(0, 0, RECORD_ENTRY_HEADER_BYTES);
      stampHeader(copy, 0, payloadBytes, seq);
      expect(copy.equals(entry)).toBe(true);
      at += size;
    }
  });

  it('stampHeader writes at an offset and leaves the bytes around it alone', () => {
    const payload = encodeRecordPayload(record(3, 'mid'));
    const out = Buffer.alloc(5 + RECORD_ENTRY_HEADER_BYTES + payload.length + 5, 0xaa);
    payload.copy(out, 5 + RECORD_ENTRY_HEADER_BYTES);
    stampHeader(out, 5, payload.length, 3);
    expect(out.subarray(0, 5).every((b) => b === 0xaa)).toBe(true);
    expect(out.subarray(out.length - 5).every((b) => b === 0xaa)).toBe(true);
    const entry = out.subarray(5, out.length - 5);
    expect(entry.equals(encodeRecordEntries([record(3, 'mid')], 3))).toBe(true);
  });

  it('an empty batch encodes to no bytes and decodes to no records', () => {
    const sizes: number[] = [];
    expect(encodeRecordEntries([], 1, sizes)).toHaveLength(0);
    expect(sizes).toEqual([]);
    expect(decodeRecordEntries(new Uint8Array(0))).toEqual([]);
  });
});

describe('record entries: malformed input is ERR_MESSAGE_INVALID', () => {
  const good = () => encodeRecordEntries(numbered(['one', 'two', { three: 3 }]), 1);

  it('a truncated header', () => {
    const bytes = good();
    expectInvalid(Buffer.concat([bytes, bytes.subarray(0, 10)]));
    expectInvalid(bytes.subarray(0, 7));
  });

  it('a payload longer than the bytes that follow', () => {
    const bytes = good();
    expectInvalid(bytes.subarray(0, bytes.length - 1));
    const lying = Buffer.from(bytes);
    lying.writeUInt32LE(lying.readUInt32LE(0) + 1_000_000, 0);
    expectInvalid(lying);
  });

  it('a zero-length payload', () => {
    const empty = Buffer.alloc(RECORD_ENTRY_HEADER_BYTES);
    stampHeader(empty, 0, 0, 1);
    expectInvalid(empty);
    // Also after a good entry.
    const bytes = encodeRecordEntries(numbered(['one']), 1);
    const next = Buffer.alloc(RECORD_ENTRY_HEADER_BYTES);
    stampHeader(next, 0, 0, 2);
    expectInvalid(Buffer.concat([bytes, next]));
  });

  it('a gap (or a step back) in the sequence numbers', () => {
    const one = encodeRecordEntries(numbered(['one']), 1);
    const three = encodeRecordEntries(numbered(['three'], 3), 3);
    expectInvalid(Buffer.concat([one, three]), /3 where 2/);
    expectInvalid(Buffer.concat([three, one]));
    expectInvalid(Buffer.concat([one, one]));
    // Without the gap it decodes.
    const two = encodeRecordEntries(numbered(['two'], 2), 2);
    expect(decodeRecordEntries(Buffer.concat([one, two])).map((r) => r.data)).toEqual(['one', 'two']);
  });

  it('an unknown stream name, in the text form and in the v8 form', () => {
    const text = { ...record(1, 'line'), stream: 'stdout' as StreamName };
    expectInvalid(encodeRecordEntries([text], 1));
    const value = { ...record(1, { a: 1 }), stream: 'bogus' as StreamName };
    expectInvalid(encodeRecordEntries([value], 1));
  });

  it('garbage payloads: a text header that promises more than follows, and bytes v8 cannot read', () => {
    const payload = encodeRecordPayload(record(1, 'text'));
    const shortText = Buffer.alloc(RECORD_ENTRY_HEADER_BYTES + 10);
    payload.copy(shortText, RECORD_ENTRY_HEADER_BYTES, 0, 10);
    stampHeader(shortText, 0, 10, 1);
    expectInvalid(shortText);

    const noise = Buffer.alloc(RECORD_ENTRY_HEADER_BYTES + 8, 0x37);
    noise[RECORD_ENTRY_HEADER_BYTES] = 0xff;
    stampHeader(noise, 0, 8, 1);
    expectInvalid(noise);

    // v8 payloads that are not records at all.
    for (const value of [5, null, 'just a string', { s: 'output' }]) {
      const payload = encodeValue(value);
      const entry = Buffer.alloc(RECORD_ENTRY_HEADER_BYTES + payload.length);
      payload.copy(entry, RECORD_ENTRY_HEADER_BYTES);
      stampHeader(entry, 0, payload.length, 1);
      expectInvalid(entry);
    }
  });

  it('the error says where and how long', () => {
    const bytes = good();
    const error = thrown(() => decodeRecordEntries(bytes.subarray(0, bytes.length - 1))) as RjobError;
    expect(error.message).toContain('Packed records are malformed');
    expect(error.details).toMatchObject({ bytes: bytes.length - 1 });
  });
});

describe('record entries: values that cannot cross', () => {
  it('a function as data throws ERR_VALUE_NOT_CLONEABLE from every encoder', () => {
    const bad = record(1, { run: function doIt() {} });
    const encoders = [
      () => encodeRecordEntries([record(1, 'fine'), { ...bad, seq: 2 }], 1),
      () => encodeRecordPayload(bad),
      () => encodeUnstampedEntry(bad),
      () => encodeRecordEntries([record(1, () => {})], 1),
    ];
    for (const encode of encoders) {
      const error = thrown(encode);
      expect(RjobError.hasCode(error, ErrorCode.ValueNotCloneable)).toBe(true);
    }
  });
});

/** A spool's warning in place of the records `fromSeq` to `toSeq`, numbered as the last of them. */
function gapWarning(fromSeq: number, toSeq: number): JobRecord & { gap: object } {
  return {
    ...record(toSeq, `${toSeq - fromSeq + 1} record(s) were dropped`, 'warning'),
    gap: { droppedRecords: toSeq - fromSeq + 1, fromSeq, toSeq },
  };
}

describe('record entries: gap warnings', () => {
  it('a gap warning keeps its counts (v8 form) and runs on from the record before it', () => {
    const records = [record(1, 'a'), record(2, 'b'), gapWarning(3, 9), record(10, 'j')];
    const bytes = Buffer.concat([
      encodeRecordEntries(records.slice(0, 2), 1),
      encodeRecordEntries([records[2]!], 9),
      encodeRecordEntries([records[3]!], 10),
    ]);
    // The counts only fit the v8 form: the warning is not stored as text.
    expect(isCompactPayload(encodeRecordEntries([records[2]!], 9), RECORD_ENTRY_HEADER_BYTES)).toBe(false);
    expect(decodeRecordEntries(bytes)).toEqual(records);
  });

  it('a jump a gap warning does not account for exactly is refused', () => {
    const bytes = (warning: JobRecord) =>
      Buffer.concat([encodeRecordEntries([record(1, 'a')], 1), encodeRecordEntries([warning], warning.seq)]);
    // Counts from 3 where 2 was due, a warning without counts, and counts that end elsewhere.
    for (const warning of [
      gapWarning(3, 9),
      record(9, 'plain', 'warning'),
      { ...gapWarning(2, 8), seq: 9 },
    ]) {
      const error = thrown(() => decodeRecordEntries(bytes(warning)));
      expect(RjobError.hasCode(error, ProtocolErrorCode.MessageInvalid)).toBe(true);
    }
    expect(decodeRecordEntries(bytes(gapWarning(2, 9)))).toHaveLength(2);
  });
});

describe('record runs (a job.receive answer)', () => {
  it('splits records of several jobs into runs of one job each and decodes them back in order', () => {
    const jobA = [1, 2, 3].map((seq) => ({ ...record(seq, `a${seq}`), jobId: 1 }));
    const jobB = [5, 6].map((seq) => ({ ...record(seq, { b: seq }), jobId: 2 }));
    const reasonB: JobRecord = {
      ...record(0, { name: 'RjobError', message: 'boom' }, 'error'),
      jobId: 2,
      reason: true,
    };
    const all = [...jobA, ...jobB, reasonB];
    const runs = encodeRecordRuns(all);
    expect(runs).toHaveLength(3);
    expect(decodeRecordEntries(runs[0]!)).toEqual(jobA);
    expect(decodeRecordRuns(runs)).toEqual(all);
    expect(encodeRecordRuns([])).toEqual([]);
    expect(decodeRecordRuns([])).toEqual([]);
  });

  it("a gap in one job's numbering starts a new run", () => {
    const records = [record(1, 'x'), record(2, 'y'), record(7, 'z')];
    const runs = encodeRecordRuns(records);
    expect(runs).toHaveLength(2);
    expect(decodeRecordRuns(runs)).toEqual(records);
  });

  it('anything but an array of whole runs is ERR_MESSAGE_INVALID', () => {
    const good = encodeRecordEntries([record(1, 'a'), record(2, 'b')], 1);
    for (const bad of [
      undefined,
      null,
      'runs',
      good,
      { entries: [good] },
      [good, 'not bytes'],
      [good, [1, 2]],
    ]) {
      const error = thrown(() => decodeRecordRuns(bad));
      expect(RjobError.hasCode(error, ProtocolErrorCode.MessageInvalid)).toBe(true);
    }
    const cut = thrown(() => decodeRecordRuns([good, good.subarray(0, good.length - 1)]));
    expect(RjobError.hasCode(cut, ProtocolErrorCode.MessageInvalid)).toBe(true);
  });
});
