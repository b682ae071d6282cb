import { open as openFile, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { JobRecord } from '@rjob/core';
import { decodeRecordEntries } from '@rjob/core/codec';
import { describe, expect, it } from 'vitest';
import {
  checkPacked,
  decodeAll,
  mixedData,
  readAll,
  readAllPacked,
  records,
  spoolDirPerTest,
} from '../fixtures/spool-test-kit.js';
import { readRecords } from '../fixtures/spool-records.js';
import { isSpoolGapRecord, type PackedRecords } from './record-spool.js';

const spools = spoolDirPerTest('rjob-spool-lost-');
const { openSpool, reopen, segmentFiles } = spools;

describe('RecordSpool.read: damaged entries', () => {
  it('steps over a damaged entry a previous process wrote, with one warning entry in its place', async () => {
    const spool = await openSpool({ segmentBytes: 4096 });
    const all = records(300, 1, (i) => `${i}:${'c'.repeat(60)}`);
    await spool.appendMany(all);
    await spool.close();
    const files = await segmentFiles();
    expect(files.length).toBeGreaterThan(2);
    // Flip one data byte of the third entry of the first segment: lengths and seqs stay valid, so
    // only the CRC tells. (The first segment is not the last, which recovery scans on open.)
    const path = join(spools.dir, files[0]!);
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
    const path = join(spools.dir, files[0]!);
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
