import { ErrorCode, type JobRecord, RjobError } from '@rjob/core';
import { describe, expect, it } from 'vitest';
import {
  checkPacked,
  decodeAll,
  mixedData,
  payloadSize,
  readAll,
  readAllPacked,
  record,
  records,
  spoolDirPerTest,
} from '../fixtures/spool-test-kit.js';
import { readRecords } from '../fixtures/spool-records.js';
import type { RecordSpool } from './record-spool.js';

const { openSpool, reopen, segmentFiles } = spoolDirPerTest('rjob-spool-packed-');

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
});
