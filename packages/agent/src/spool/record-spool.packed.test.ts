import { mkdtemp, open as openFile, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeRecordEntries, encodeRecordPayload, ErrorCode, type JobRecord, RjobError } from '@rjob/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readRecords } from '../fixtures/spool-records.js';
import {
  isSpoolGapRecord,
  type PackedRecords,
  RecordSpool,
  type RecordSpoolOptions,
  type SpoolReadOptions,
} from './record-spool.js';

let dir: string;
const open: RecordSpool[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rjob-spool-packed-'));
});

afterEach(async () => {
  await Promise.all(open.splice(0).map((spool) => spool.close().catch(() => {})));
  await rm(dir, { recursive: true, force: true });
});

async function openSpool(options: Partial<RecordSpoolOptions> = {}): Promise<RecordSpool> {
  const spool = await RecordSpool.open({ dir, ...options });
  open.push(spool);
  return spool;
}

/** Closes `spool` and opens the directory again: its segments are now a previous process's. */
async function reopen(spool: RecordSpool, options: Partial<RecordSpoolOptions> = {}): Promise<RecordSpool> {
  await spool.close();
  return openSpool(options);
}

function record(i: number, data: unknown = `line ${i}`): JobRecord {
  return { stream: 'output', data, seq: i, timeMs: 1_700_000_000_000 + i, jobId: 7, location: 'host-a' };
}

/** Records numbered from `from`, with data made by `data`. */
function records(count: number, from = 1, data: (i: number) => unknown = (i) => `line ${i}`): JobRecord[] {
  return Array.from({ length: count }, (_, k) => record(from + k, data(from + k)));
}

/** Text, multi-byte text, objects, buffers and errors, so both entry forms occur. */
function mixedData(i: number): unknown {
  switch (i % 7) {
    case 0:
      return { i, nested: [i, `n${i}`] };
    case 3:
      return `ünï ${i} 😀`;
    case 5:
      return Buffer.from(`buf${i}`);
    default:
      return `line ${i} ${'.'.repeat(i % 50)}`;
  }
}

async function readAll(spool: RecordSpool, fromSeq = 1, options: SpoolReadOptions = { maxRecords: 97 }) {
  const out: JobRecord[] = [];
  for (let next = fromSeq; ; ) {
    const batch = await readRecords(spool, next, options);
    if (batch.length === 0) return out;
    out.push(...batch);
    next = batch.at(-1)!.seq + 1;
  }
}

/** Successive reads from `fromSeq` until one returns nothing; checks the batches join up. */
async function readAllPacked(
  spool: RecordSpool,
  fromSeq = 1,
  options: SpoolReadOptions = { maxRecords: 97 },
) {
  const batches: PackedRecords[] = [];
  for (let next = fromSeq; ; ) {
    const packed = await spool.read(next, options);
    expect(packed).toBeDefined();
    expect(packed!.firstSeq).toBe(next);
    if (packed!.count === 0) {
      expect(packed!.bytes).toHaveLength(0);
      return batches;
    }
    checkPacked(packed!);
    batches.push(packed!);
    next = packed!.lastSeq + 1;
  }
}

/** A packed batch's fields agree with what its bytes decode to. */
function checkPacked(packed: PackedRecords): JobRecord[] {
  const decoded = decodeRecordEntries(packed.bytes);
  expect(decoded).toHaveLength(packed.count);
  expect(packed.lastSeq - packed.firstSeq + 1).toBe(packed.count);
  if (packed.count > 0) {
    expect(decoded[0]!.seq).toBe(packed.firstSeq);
    expect(decoded.at(-1)!.seq).toBe(packed.lastSeq);
  }
  return decoded;
}

const decodeAll = (batches: PackedRecords[]) => batches.flatMap((b) => decodeRecordEntries(b.bytes));

async function segmentFiles(): Promise<string[]> {
  return (await readdir(dir)).filter((name) => name.endsWith('.seg')).sort();
}

function payloadSize(each: JobRecord): number {
  return encodeRecordPayload(each).length;
}

describe('RecordSpool.appendMany', () => {
  it('numbers records consecutively and read() returns them equal', async () => {
    const spool = await openSpool();
    expect(await spool.appendMany(records(100, 1, mixedData))).toBe(100);
    expect(spool.lastSeq).toBe(100);
    expect(await spool.appendMany([])).toBe(100);
    expect(await spool.append(record(101, 'single'))).toBe(101);
    expect(await spool.appendMany(records(50, 102, mixedData))).toBe(151);
    const expected = [...records(100, 1, mixedData), record(101, 'single'), ...records(50, 102, mixedData)];
    expect(await readAll(spool)).toEqual(expected);
    // And from disk, by a later process.
    const reopened = await reopen(spool);
    expect(reopened.lastSeq).toBe(151);
    expect(await readAll(reopened)).toEqual(expected);
    // Appending goes on in the recovered segment; packed reads span old and new entries.
    expect(await reopened.appendMany(records(20, 152, mixedData))).toBe(171);
    const extended = [...expected, ...records(20, 152, mixedData)];
    expect(await readAll(reopened)).toEqual(extended);
    expect(decodeAll(await readAllPacked(reopened, 1))).toEqual(extended);
    expect(decodeAll(await readAllPacked(reopened, 140, { maxRecords: 5 }))).toEqual(extended.slice(139));
  });

  it('gives records the spool numbers, whatever seq they came with', async () => {
    const spool = await openSpool();
    await spool.appendMany(records(3, 1));
    // Records numbered elsewhere (here from 900) are renumbered on after 3.
    expect(await spool.appendMany(records(4, 900))).toBe(7);
    const all = await readAll(spool);
    expect(all.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(all.slice(3).map((r) => r.data)).toEqual(['line 900', 'line 901', 'line 902', 'line 903']);
    const packed = await readAllPacked(spool);
    expect(decodeAll(packed)).toEqual(all);
  });

  it('stores an uncloneable value as an ERR_VALUE_NOT_CLONEABLE error record and keeps the others', async () => {
    const spool = await openSpool();
    const batch = [
      record(1, 'before'),
      record(2, { run: function notify() {} }),
      record(3, { fine: true }),
      record(4, 'after'),
    ];
    expect(await spool.appendMany(batch)).toBe(4);
    const all = await readAll(spool);
    expect(all.map((r) => r.seq)).toEqual([1, 2, 3, 4]);
    expect(all[0]).toEqual(record(1, 'before'));
    expect(all[2]).toEqual(record(3, { fine: true }));
    expect(all[3]).toEqual(record(4, 'after'));
    expect(all[1]!.stream).toBe('error');
    expect(all[1]!.seq).toBe(2);
    expect(RjobError.hasCode(all[1]!.data, ErrorCode.ValueNotCloneable)).toBe(true);
    expect((all[1]!.data as Error).message).toContain('function');
    // Packed reads give the same records, and the spool goes on numbering after them.
    expect(decodeAll(await readAllPacked(spool))).toEqual(all);
    expect(await spool.appendMany(records(2, 5))).toBe(6);
  });

  it('block policy: appendMany on a full spool waits for acks and loses nothing', async () => {
    const spool = await openSpool({ maxBytes: 16 * 1024, policy: 'block' });
    const filler = (i: number) => `${i}:${'x'.repeat(200)}`;
    let seq = 0;
    // One at a time: a batch may pass the bound partway and then wait (as it should).
    while (spool.writable) seq = await spool.append(record(seq + 1, filler(seq + 1)));
    expect(spool.bytes).toBeGreaterThanOrEqual(16 * 1024);

    const more = records(300, seq + 1, (i) => `${i}:${'y'.repeat(200)}`);
    let taken: number | undefined;
    const appended = spool.appendMany(more).then((s) => (taken = s));
    await spool.flush();
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(taken).toBeUndefined();
    expect(spool.writable).toBe(false);

    // A reader takes and acknowledges what is there, over and over, until the append is through.
    const got: JobRecord[] = [];
    let next = 1;
    let rounds = 0;
    while (taken === undefined || next <= seq + more.length) {
      const batch = await readRecords(spool, next, { maxRecords: 40 });
      if (batch.length > 0) {
        got.push(...batch);
        next = batch.at(-1)!.seq + 1;
        await spool.ack(next - 1);
      } else {
        await new Promise((resolve) => setImmediate(resolve));
      }
      expect(++rounds).toBeLessThan(10_000);
    }
    await appended;
    expect(taken).toBe(seq + more.length);
    expect(got.map((r) => r.seq)).toEqual(Array.from({ length: seq + more.length }, (_, i) => i + 1));
    expect(got.slice(seq)).toEqual(more.map((r, k) => ({ ...r, seq: seq + 1 + k })));
    expect(spool.droppedRecords).toBe(0);
  });
});

describe('RecordSpool.read: entries as stored', () => {
  it('decodes to exactly the records appended, from the tail cache (text records)', async () => {
    const spool = await openSpool();
    const texts = records(500, 1, (i) => `${i} ✓ ${'t'.repeat(i % 40)}`);
    await spool.appendMany(texts.slice(0, 200));
    for (const each of texts.slice(200)) await spool.append(each);
    for (const from of [1, 2, 199, 200, 201, 500]) {
      const packed = await spool.read(from, { maxRecords: 1000 });
      const decoded = checkPacked(packed);
      expect(decoded).toEqual(texts.slice(from - 1));
    }
    const none = await spool.read(501);
    expect(none).toEqual({ bytes: Buffer.alloc(0), count: 0, firstSeq: 501, lastSeq: 500 });
  });

  it('Buffer records come from the tail cache as the same bytes as from disk, each read its own copy', async () => {
    const spool = await openSpool();
    const chunk = (i: number) => Buffer.alloc(8 * 1024 + i, i & 0xff);
    const all = records(100, 1, chunk);
    await spool.appendMany(all);
    const fromMemory = await readAllPacked(spool, 1, { maxRecords: 30 });
    // Two reads of the cached run: equal bytes, different Buffers, so one reader cannot change
    // what another gets.
    const [first] = await readRecords(spool, 1, { maxRecords: 1 });
    const [again] = await readRecords(spool, 1, { maxRecords: 1 });
    expect(first).toEqual(all[0]);
    expect(first!.data).not.toBe(again!.data);
    (first!.data as Buffer).fill(0xee);
    expect((again!.data as Buffer).equals(chunk(1))).toBe(true);
    const reopened = await reopen(spool);
    const fromDisk = await readAllPacked(reopened, 1, { maxRecords: 30 });
    expect(
      Buffer.concat(fromDisk.map((b) => b.bytes)).equals(Buffer.concat(fromMemory.map((b) => b.bytes))),
    ).toBe(true);
    expect(decodeAll(fromDisk)).toEqual(all);
  });

  it('serves the same bytes from memory as from disk, which decode to the records appended', async () => {
    const spool = await openSpool();
    await spool.appendMany(records(300, 1, (i) => `text ${i} äöü`));
    const fromMemory = await readAllPacked(spool, 1);
    const reopened = await reopen(spool);
    const fromDisk = await readAllPacked(reopened, 1);
    expect(
      Buffer.concat(fromDisk.map((b) => b.bytes)).equals(Buffer.concat(fromMemory.map((b) => b.bytes))),
    ).toBe(true);
    expect(decodeAll(fromDisk)).toEqual(await readAll(reopened));
    expect(decodeAll(fromDisk)).toEqual(records(300, 1, (i) => `text ${i} äöü`));
  });

  it('reads from disk once the tail cache no longer holds the start (more than 4 MiB of text)', async () => {
    const spool = await openSpool();
    const line = (i: number) => `${i}:${'z'.repeat(1000)}`;
    const total = 5_000; // ~5 MiB of payload
    for (let from = 1; from <= total; from += 500) await spool.appendMany(records(500, from, line));
    for (const from of [1, 2, 777, 1500]) {
      const options = { maxRecords: 300, maxBytes: 128 * 1024 };
      const packed = await spool.read(from, options);
      const decoded = checkPacked(packed);
      expect(decoded.length).toBeGreaterThan(0);
      expect(decoded.map((r) => r.data)).toEqual(
        Array.from({ length: decoded.length }, (_, k) => line(from + k)),
      );
    }
    const everything = await readAllPacked(spool, 1, { maxRecords: 700, maxBytes: 512 * 1024 });
    expect(decodeAll(everything)).toEqual(records(total, 1, line));
  });

  it('mixed records (text and v8 forms) decode to the records appended, live and after a reopen', async () => {
    const spool = await openSpool();
    const all = records(400, 1, mixedData);
    await spool.appendMany(all.slice(0, 150));
    for (const each of all.slice(150, 160)) await spool.append(each);
    await spool.appendMany(all.slice(160));
    for (const from of [1, 3, 4, 5, 6, 7, 8, 150, 155, 399, 400]) {
      const packed = await spool.read(from, { maxRecords: 50 });
      expect(checkPacked(packed)).toEqual(all.slice(from - 1, from - 1 + 50));
    }
    expect(decodeAll(await readAllPacked(spool))).toEqual(all);
    const reopened = await reopen(spool);
    expect(decodeAll(await readAllPacked(reopened, 1, { maxRecords: 33 }))).toEqual(all);
    expect(decodeAll(await readAllPacked(reopened, 201, { maxRecords: 33 }))).toEqual(all.slice(200));
  });

  it('successive calls cover everything across segment boundaries, live and after a reopen', async () => {
    const spool = await openSpool({ segmentBytes: 4096 });
    const all = records(1000, 1, mixedData);
    for (let from = 1; from <= 1000; from += 100) await spool.appendMany(all.slice(from - 1, from + 99));
    await spool.sync();
    expect((await segmentFiles()).length).toBeGreaterThan(10);
    for (const maxRecords of [1, 7, 97, 5000]) {
      const batches = await readAllPacked(spool, 1, { maxRecords });
      expect(decodeAll(batches)).toEqual(all);
      expect(batches.every((b) => b.count <= maxRecords)).toBe(true);
    }
    const reopened = await reopen(spool, { segmentBytes: 4096 });
    for (const maxRecords of [1, 97, 5000]) {
      expect(decodeAll(await readAllPacked(reopened, 1, { maxRecords }))).toEqual(all);
    }
    expect(decodeAll(await readAllPacked(reopened, 613))).toEqual(all.slice(612));
  });

  it('reads from the middle of a large segment a previous process wrote', async () => {
    const spool = await openSpool({ segmentBytes: 1024 * 1024 });
    const line = (i: number) => `${i}:${'m'.repeat(900)}`;
    const all = records(3000, 1, line);
    for (let from = 1; from <= 3000; from += 250) await spool.appendMany(all.slice(from - 1, from + 249));
    const reopened = await reopen(spool, { segmentBytes: 1024 * 1024 });
    expect((await segmentFiles()).length).toBeGreaterThan(2);
    for (const from of [600, 1, 1200, 2999, 3000]) {
      const options = { maxRecords: 1000, maxBytes: 4096 };
      const packed = await reopened.read(from, options);
      const decoded = checkPacked(packed);
      expect(decoded.length).toBeGreaterThan(0);
      expect(decoded).toEqual(all.slice(from - 1, from - 1 + decoded.length));
    }
    expect(decodeAll(await readAllPacked(reopened, 1, { maxRecords: 1000, maxBytes: 64 * 1024 }))).toEqual(
      all,
    );
  });

  it('respects maxRecords and maxBytes, and always returns the first record', async () => {
    const spool = await openSpool();
    const all = records(100, 1, (i) => `${i}:${'b'.repeat(100)}`);
    await spool.appendMany(all);
    const size = payloadSize(all[0]!);
    const check = async (s: RecordSpool) => {
      expect((await s.read(1, { maxRecords: 5 }))!.count).toBe(5);
      const byBytes = (await s.read(1, { maxBytes: 3 * size + 1 }))!;
      expect(byBytes.count).toBe(3);
      expect(byBytes.bytes.length).toBe(3 * (size + 16));
      expect(checkPacked(byBytes)).toEqual(all.slice(0, 3));
      const exact = (await s.read(10, { maxBytes: 4 * payloadSize(all[9]!) }))!;
      expect(exact.count).toBe(4);
      // A limit below one record still gives that record.
      const one = (await s.read(50, { maxBytes: 1 }))!;
      expect(one.count).toBe(1);
      expect(checkPacked(one)).toEqual([all[49]]);
      expect((await s.read(50, { maxRecords: 0 }))!.count).toBe(1);
      // Both limits: the tighter wins.
      expect((await s.read(1, { maxRecords: 2, maxBytes: 10 * size }))!.count).toBe(2);
      expect((await s.read(1, { maxRecords: 20, maxBytes: 2 * size }))!.count).toBe(2);
      // Never past the end.
      expect((await s.read(98, { maxRecords: 10 }))!.count).toBe(3);
    };
    await check(spool); // from the tail cache
    await check(await reopen(spool)); // from disk
  });

  it('a record larger than maxBytes is returned alone, then reading goes on after it', async () => {
    const spool = await openSpool();
    const big = record(2, 'B'.repeat(300 * 1024));
    await spool.appendMany([record(1, 'small'), big, record(3, 'small again')]);
    const reopened = await reopen(spool);
    const first = (await reopened.read(1, { maxBytes: 64 * 1024 }))!;
    expect(checkPacked(first)).toEqual([record(1, 'small')]);
    const second = (await reopened.read(2, { maxBytes: 64 * 1024 }))!;
    expect(checkPacked(second)).toEqual([big]);
    const third = (await reopened.read(3, { maxBytes: 64 * 1024 }))!;
    expect(checkPacked(third)).toEqual([record(3, 'small again')]);
  });

  it('a first record larger than maxBytes at the end of a segment: returned alone, the next segment untouched', async () => {
    const spool = await openSpool({ segmentBytes: 4096 });
    const big = record(1, 'B'.repeat(100 * 1024));
    await spool.appendMany([big, ...records(50, 2)]);
    const check = async (s: RecordSpool) => {
      expect(checkPacked(await s.read(1, { maxBytes: 1024 }))).toEqual([big]);
      expect(checkPacked(await s.read(2, { maxBytes: 1024 }))[0]).toEqual(record(2));
    };
    await check(spool); // from the tail cache
    await check(await reopen(spool, { segmentBytes: 4096 })); // from disk: the budget is spent in the first segment
  });

  it('starts at the first unacknowledged record', async () => {
    const spool = await openSpool({ segmentBytes: 4096 });
    await spool.appendMany(records(300, 1, mixedData));
    await spool.ack(120);
    const packed = (await spool.read(1, { maxRecords: 10 }))!;
    expect(packed.firstSeq).toBe(121);
    expect(checkPacked(packed)).toEqual(records(10, 121, mixedData));
  });

  it('steps over a damaged entry a previous process wrote, with one warning entry in its place', async () => {
    const spool = await openSpool({ segmentBytes: 4096 });
    const all = records(300, 1, (i) => `${i}:${'c'.repeat(60)}`);
    await spool.appendMany(all);
    await spool.close();
    const files = await segmentFiles();
    expect(files.length).toBeGreaterThan(2);
    // Flip one data byte of the third entry of the first segment: lengths and seqs stay valid, so
    // only the CRC tells. (The first segment is not the last, which recovery scans on open.)
    const path = join(dir, files[0]!);
    const bytes = await readFile(path);
    let at = 0;
    for (let k = 0; k < 2; k++) at += 16 + bytes.readUInt32LE(at);
    const target = at + 16 + bytes.readUInt32LE(at) - 1;
    expect(String.fromCharCode(bytes[target]!)).toBe('c');
    const handle = await openFile(path, 'r+');
    await handle.write(Buffer.from('d'), 0, 1, target);
    await handle.close();

    const reopened = await openSpool({ segmentBytes: 4096 });
    expect(reopened.lastSeq).toBe(300);
    // The records before the damage, the warning in place of the damaged one, then the rest.
    const decoded = await readRecords(reopened, 1, { maxRecords: 5 });
    expect(decoded.slice(0, 2)).toEqual(all.slice(0, 2));
    expect(decoded[2]).toMatchObject({
      stream: 'warning',
      seq: 3,
      gap: { droppedRecords: 1, fromSeq: 3, toSeq: 3 },
    });
    expect(decoded.slice(3)).toEqual(all.slice(3, 5));
    const fromDamage = await readRecords(reopened, 3, { maxRecords: 3 });
    expect(fromDamage[0]).toMatchObject({ stream: 'warning', seq: 3, gap: { droppedRecords: 1 } });
    expect(fromDamage.slice(1)).toEqual(all.slice(3, 5));
    // Once found, the damage is stepped over by reads from past it.
    expect(checkPacked(await reopened.read(4, { maxRecords: 5 }))).toEqual(all.slice(3, 8));
    const lastSegmentFirst = Number(files.at(-1)!.slice(0, 16));
    const intact = await reopened.read(lastSegmentFirst);
    expect(checkPacked(intact!)).toEqual(all.slice(lastSegmentFirst - 1));
  });

  it('a damaged entry past the read position: the records before it, its warning, the records after it, in one read', async () => {
    const spool = await openSpool({ segmentBytes: 4096 });
    await spool.appendMany(records(300, 1, (i) => `${i}:${'c'.repeat(60)}`));
    await spool.close();
    const files = await segmentFiles();
    const path = join(dir, files[0]!);
    const bytes = await readFile(path);
    // Flip a payload byte of the 5th entry: only its CRC tells.
    let at = 0;
    for (let k = 0; k < 4; k++) at += 16 + bytes.readUInt32LE(at);
    const handle = await openFile(path, 'r+');
    const payloadBytes = bytes.readUInt32LE(at);
    await handle.write(
      Buffer.from([bytes[at + 16 + Math.floor(payloadBytes / 2)]! ^ 0x01]),
      0,
      1,
      at + 16 + Math.floor(payloadBytes / 2),
    );
    await handle.close();
    const reopened = await openSpool({ segmentBytes: 4096 });
    const all = records(300, 1, (i) => `${i}:${'c'.repeat(60)}`);
    const first = await reopened.read(1, { maxRecords: 10 });
    expect(first).toMatchObject({ count: 10, firstSeq: 1, lastSeq: 10 });
    const decoded = decodeRecordEntries(first.bytes);
    expect(decoded.slice(0, 4)).toEqual(all.slice(0, 4));
    expect(decoded[4]).toMatchObject({
      stream: 'warning',
      seq: 5,
      gap: { droppedRecords: 1, fromSeq: 5, toSeq: 5 },
    });
    expect(decoded.slice(5)).toEqual(all.slice(5, 10));
  });
});

describe('RecordSpool: packed reads and the drop policy', () => {
  it('gives the gap warning as the first entry of a read and of follow', async () => {
    const maxBytes = 64 * 1024;
    const spool = await openSpool({ maxBytes, policy: 'drop' });
    const line = (i: number) => `${i}:${'y'.repeat(200)}`;
    for (let from = 1; from <= 2000; from += 50) {
      await spool.appendMany(records(50, from, line));
      expect(spool.bytes).toBeLessThanOrEqual(maxBytes);
    }
    expect(spool.droppedRecords).toBeGreaterThan(0);
    const firstKept = spool.droppedRecords + 1;

    const atOne = await spool.read(1, { maxRecords: 5 });
    expect(atOne).toMatchObject({ count: 5, firstSeq: 1, lastSeq: firstKept + 3 });
    const [warning, ...kept] = decodeRecordEntries(atOne.bytes);
    expect(warning).toMatchObject({ stream: 'warning', seq: firstKept - 1 });
    expect(kept).toEqual(records(4, firstKept, line));
    const late = decodeRecordEntries((await spool.read(firstKept - 1, { maxRecords: 1 })).bytes);
    expect(late).toHaveLength(1);
    expect(isSpoolGapRecord(late[0]!) && late[0].gap).toEqual({
      droppedRecords: 1,
      fromSeq: firstKept - 1,
      toSeq: firstKept - 1,
    });
    const atKept = await spool.read(firstKept, { maxRecords: 5 });
    expect(checkPacked(atKept)).toEqual(records(5, firstKept, line));

    await spool.seal();
    const batches: PackedRecords[] = [];
    for await (const batch of spool.follow(1, { maxRecords: 100 })) batches.push(batch);
    expect(batches.length).toBeGreaterThan(1);
    const [gap, ...delivered] = decodeAll(batches);
    expect(isSpoolGapRecord(gap!)).toBe(true);
    if (!isSpoolGapRecord(gap!)) return;
    expect(gap.gap).toEqual({ droppedRecords: firstKept - 1, fromSeq: 1, toSeq: firstKept - 1 });
    expect(gap.seq).toBe(firstKept - 1);
    expect(gap.stream).toBe('warning');
    expect(delivered).toEqual(records(2000 - firstKept + 1, firstKept, line));
  });

  it('one appendMany larger than the bound keeps its newest records and reports the rest as dropped', async () => {
    const maxBytes = 64 * 1024;
    const spool = await openSpool({ maxBytes, policy: 'drop' });
    const line = (i: number) => `${i}:${'w'.repeat(200)}`;
    expect(await spool.appendMany(records(1000, 1, line))).toBe(1000);
    expect(spool.bytes).toBeLessThanOrEqual(maxBytes);
    const firstKept = spool.droppedRecords + 1;
    expect(firstKept).toBeGreaterThan(1);
    const all = await readAll(spool);
    expect(isSpoolGapRecord(all[0]!)).toBe(true);
    expect(all.slice(1)).toEqual(records(1000 - firstKept + 1, firstKept, line));
    expect(decodeRecordEntries((await spool.read(1)).bytes)[0]).toMatchObject({
      stream: 'warning',
      seq: firstKept - 1,
    });
    expect(decodeAll(await readAllPacked(spool, firstKept))).toEqual(all.slice(1));
  });

  it('follow without a gap yields batches that join up, and follows new appends', async () => {
    const spool = await openSpool();
    await spool.appendMany(records(10, 1, mixedData));
    const controller = new AbortController();
    const seen: JobRecord[] = [];
    const following = (async () => {
      for await (const batch of spool.follow(1, { signal: controller.signal, maxRecords: 4 })) {
        seen.push(...checkPacked(batch));
        if (seen.length === 25) controller.abort();
      }
    })();
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    await spool.appendMany(records(15, 11, mixedData));
    await following;
    expect(seen).toEqual(records(25, 1, mixedData));
  });
});

describe('RecordSpool: read handles', () => {
  const openFds = async () => (await readdir('/proc/self/fd')).length;

  it('reading through many segments keeps at most one extra descriptor open', async () => {
    const spool = await openSpool({ segmentBytes: 4096 });
    const all = records(600, 1, (i) => `${i}:${'s'.repeat(90)}`);
    await spool.appendMany(all);
    await spool.flush();
    expect((await segmentFiles()).length).toBeGreaterThan(10);
    const before = await openFds();
    let most = 0;
    const got: JobRecord[] = [];
    for (let next = 1; ; ) {
      const batch = await readRecords(spool, next, { maxRecords: 40 });
      if (batch.length === 0) break;
      most = Math.max(most, (await openFds()) - before);
      got.push(...batch);
      next = batch.at(-1)!.seq + 1;
    }
    expect(got).toEqual(all);
    expect(most).toBeLessThanOrEqual(1);
    await spool.close();
    // The handle is closed with the spool.
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(await openFds()).toBeLessThanOrEqual(before - 1);
  });

  it('readers in different segments at once, and an ack deleting segments meanwhile, read right', async () => {
    const spool = await openSpool({ segmentBytes: 4096 });
    const all = records(800, 1, (i) => `${i}:${'r'.repeat(70)}`);
    await spool.appendMany(all);
    await spool.flush();
    const reopened = await reopen(spool, { segmentBytes: 4096 });
    // Two readers per start (decoded and raw), each starting in another segment, interleaving.
    const starts = [401, 1, 650, 200, 799];
    const packedFrom = async (from: number): Promise<JobRecord[]> => {
      const out: JobRecord[] = [];
      for (let next = from; ; ) {
        const packed = await reopened.read(next, { maxRecords: 17 });
        if (packed.count === 0) return out;
        out.push(...checkPacked(packed));
        next = packed.lastSeq + 1;
      }
    };
    const readers = starts.flatMap((from) => [readAll(reopened, from, { maxRecords: 13 }), packedFrom(from)]);
    const acked = reopened.ack(399);
    const results = await Promise.all(readers);
    await acked;
    for (const [k, from] of starts.entries()) {
      for (const got of [results[2 * k]!, results[2 * k + 1]!]) {
        // A reader may skip what the ack took away; everything it got is right and in order.
        expect(got.length).toBeGreaterThan(0);
        expect(got[0]!.seq).toBeGreaterThanOrEqual(from);
        for (const [i, each] of got.entries()) {
          expect(each).toEqual(all[each.seq - 1]);
          if (i > 0) expect(each.seq).toBeGreaterThan(got[i - 1]!.seq);
        }
        expect(got.at(-1)!.seq).toBe(800);
        // From the first record after the ack on, nothing is missing.
        const after = got.filter((each) => each.seq >= Math.max(from, 400));
        expect(after.map((each) => each.seq)).toEqual(
          Array.from({ length: 801 - Math.max(from, 400) }, (_, i) => Math.max(from, 400) + i),
        );
      }
    }
  });
});
