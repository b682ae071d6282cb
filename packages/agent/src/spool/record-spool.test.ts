import {
  appendFile,
  open as openFile,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  truncate,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type JobRecord, RjobError } from '@rjob/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { followBatches, followRecords, readRecords } from '../fixtures/spool-records.js';
import { incidents } from '../incidents.js';
import { isSpoolGapRecord, RecordSpool, type RecordSpoolOptions } from './record-spool.js';
import { encodeHeader, encodeRecord } from './segment-format.js';

let dir: string;
const open: RecordSpool[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rjob-spool-'));
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

function record(i: number, data: unknown = { i, text: `line ${i}` }): JobRecord {
  return { stream: 'output', data, seq: i, timeMs: 1_700_000_000_000 + i, jobId: 7, location: 'host-a' };
}

async function readAll(spool: RecordSpool, fromSeq = 1): Promise<JobRecord[]> {
  const out: JobRecord[] = [];
  for (let next = fromSeq; ; ) {
    const batch = await readRecords(spool, next, { maxRecords: 97 });
    if (batch.length === 0) return out;
    out.push(...batch);
    next = batch.at(-1)!.seq + 1;
  }
}

async function segmentFiles(): Promise<string[]> {
  return (await readdir(dir)).filter((name) => name.endsWith('.seg')).sort();
}

describe('RecordSpool', () => {
  it('appends, reads from any position and acks across segment rotation', async () => {
    const spool = await openSpool({ segmentBytes: 4096 });
    for (let i = 1; i <= 1000; i++) expect(await spool.append(record(i))).toBe(i);
    await spool.sync();
    expect((await segmentFiles()).length).toBeGreaterThan(10);

    const all = await readAll(spool);
    expect(all.map((r) => r.seq)).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
    expect(all[41]).toEqual(record(42));
    expect((await readRecords(spool, 500, { maxRecords: 3 })).map((r) => r.seq)).toEqual([500, 501, 502]);
    expect(await readRecords(spool, 1001)).toEqual([]);

    const filesBefore = (await segmentFiles()).length;
    const bytesBefore = spool.bytes;
    await spool.ack(600);
    expect(spool.ackedSeq).toBe(600);
    expect((await segmentFiles()).length).toBeLessThan(filesBefore);
    expect(spool.bytes).toBeLessThan(bytesBefore);
    expect((await readRecords(spool, 1, { maxRecords: 1 }))[0]!.seq).toBe(601);
    await spool.close();

    const reopened = await openSpool({ segmentBytes: 4096 });
    expect(reopened.ackedSeq).toBe(600);
    expect(reopened.lastSeq).toBe(1000);
    expect((await readAll(reopened)).map((r) => r.seq)).toEqual(
      Array.from({ length: 400 }, (_, i) => i + 601),
    );
    expect(await reopened.append(record(1001))).toBe(1001);

    await reopened.ack(1001);
    // Everything acknowledged: only a fresh, empty segment is left.
    expect(reopened.bytes).toBe(0);
    expect(await segmentFiles()).toHaveLength(1);
    expect(await reopened.append(record(1002))).toBe(1002);
    expect((await readAll(reopened)).map((r) => r.seq)).toEqual([1002]);
  });

  it('keeps structured-clone values and coded errors', async () => {
    const spool = await openSpool();
    const value = {
      when: new Date(1_700_000_000_000),
      map: new Map<string, unknown>([['a', 1n << 70n]]),
      set: new Set([1, 2]),
      bytes: new Uint8Array([1, 2, 3]),
    };
    await spool.append(record(1, value));
    const error = new RjobError('ERR_SOMETHING', 'it broke', { details: { x: 1 } });
    await spool.append({ ...record(2), stream: 'error', data: error });
    const [first, second] = await readRecords(spool, 1);
    expect(first!.data).toEqual(value);
    expect(RjobError.hasCode(second!.data, 'ERR_SOMETHING')).toBe(true);
    expect((second!.data as RjobError).details).toEqual({ x: 1 });
    await expect(spool.append(record(3, { fn: () => 1 }))).rejects.toMatchObject({
      code: 'ERR_VALUE_NOT_CLONEABLE',
    });
  });

  it('keeps text and other records exactly, from memory, from disk and after a reopen', async () => {
    const spool = await openSpool({ segmentBytes: 4096 });
    const values: unknown[] = [
      'plain line',
      'ünïcödé ✓ 🚀',
      // A lone surrogate does not survive UTF-8: such a string takes the structured-clone path.
      'broken \ud800 surrogate',
      '',
      { structured: [1, 2n, new Date(5)] },
      'x'.repeat(3000),
    ];
    for (let i = 0; i < 60; i++) await spool.append(record(i + 1, values[i % values.length]));
    const expected = Array.from({ length: 60 }, (_, i) => record(i + 1, values[i % values.length]));
    // Caught up: served from the recent records kept in memory.
    expect(await readAll(spool)).toEqual(expected);
    // Batches are in order, contiguous, and within the limits.
    const batches: JobRecord[][] = [];
    await spool.seal();
    for await (const batch of followBatches(spool, 1, { maxRecords: 7 })) batches.push(batch);
    expect(batches.every((batch) => batch.length > 0 && batch.length <= 7)).toBe(true);
    expect(batches.flat()).toEqual(expected);
    await spool.ack(20);
    expect((await readRecords(spool, 1, { maxRecords: 1 }))[0]!.seq).toBe(21);
    await spool.close();
    // From disk, checksums verified: the files came from another "process".
    const reopened = await openSpool({ segmentBytes: 4096 });
    expect(await readAll(reopened)).toEqual(expected.slice(20));
  });

  it('follows appends made after the iterator started, and ends once sealed', async () => {
    const spool = await openSpool({ segmentBytes: 4096 });
    await spool.append(record(1));
    const seen: number[] = [];
    const following = (async () => {
      for await (const r of followRecords(spool, 1)) seen.push(r.seq);
    })();
    // Let the follower drain what exists and wait for more.
    while (seen.length < 1) await new Promise((resolve) => setImmediate(resolve));
    for (let i = 2; i <= 300; i++) await spool.append(record(i));
    await spool.seal();
    await following;
    expect(seen).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
    await expect(spool.append(record(301))).rejects.toMatchObject({ code: 'ERR_SPOOL_SEALED' });
  });

  it('stops following when the signal aborts', async () => {
    const spool = await openSpool();
    const controller = new AbortController();
    const following = (async () => {
      const seen: number[] = [];
      for await (const r of followRecords(spool, 1, { signal: controller.signal })) seen.push(r.seq);
      return seen;
    })();
    await spool.append(record(1));
    await spool.flush();
    controller.abort();
    // It ends (rather than waiting forever for a record that never comes).
    expect([[], [1]]).toContainEqual(await following);
  });

  it('block policy: an append waits until an ack frees space, then goes on', async () => {
    const spool = await openSpool({ maxBytes: 16 * 1024, policy: 'block' });
    let seq = 0;
    while (spool.writable) seq = await spool.append(record(seq + 1, 'x'.repeat(200)));
    expect(spool.bytes).toBeGreaterThanOrEqual(16 * 1024);
    expect(spool.bytes).toBeLessThan(16 * 1024 + 300);

    let writableFired = 0;
    spool.onWritable(() => writableFired++);
    let taken: number | undefined;
    const blocked = spool.append(record(seq + 1, 'x'.repeat(200))).then((s) => (taken = s));
    // Everything that could settle it without an ack has run.
    await spool.flush();
    await new Promise((resolve) => setImmediate(resolve));
    expect(taken).toBeUndefined();
    expect(spool.writable).toBe(false);

    const resumed = spool.waitWritable();
    await spool.ack(seq);
    await blocked;
    await resumed;
    expect(taken).toBe(seq + 1);
    expect(writableFired).toBe(1);
    expect((await readAll(spool)).map((r) => r.seq)).toEqual([seq + 1]);
  });

  it('drop policy keeps the newest records within the bound and reports the gap', async () => {
    const maxBytes = 64 * 1024;
    const spool = await openSpool({ maxBytes, policy: 'drop' });
    for (let i = 1; i <= 2000; i++) {
      await spool.append(record(i, `${i}:${'y'.repeat(200)}`));
      expect(spool.bytes).toBeLessThanOrEqual(maxBytes);
    }
    const all = await readAll(spool);
    const [gap, ...kept] = all;
    expect(isSpoolGapRecord(gap!)).toBe(true);
    if (!isSpoolGapRecord(gap!)) return;
    const firstKept = kept[0]!.seq;
    expect(gap.gap).toEqual({ droppedRecords: firstKept - 1, fromSeq: 1, toSeq: firstKept - 1 });
    expect(gap.seq).toBe(firstKept - 1);
    expect(gap.stream).toBe('warning');
    expect(gap.data).toContain(`${firstKept - 1} record(s)`);
    expect(spool.droppedRecords).toBe(firstKept - 1);
    expect(kept.map((r) => r.seq)).toEqual(
      Array.from({ length: 2000 - firstKept + 1 }, (_, i) => firstKept + i),
    );
    // The newest records fill most of the bound (disk is freed a whole segment at a time).
    expect(kept.length * 230).toBeGreaterThan(maxBytes / 2);

    // A reader that had received some records only hears about the ones it missed.
    const later = (await readRecords(spool, 10, { maxRecords: 1 }))[0]!;
    expect(isSpoolGapRecord(later) && later.gap.droppedRecords).toBe(firstKept - 10);
    // Acknowledging past the gap consumes the warning.
    await spool.ack(firstKept);
    expect((await readRecords(spool, 1, { maxRecords: 1 }))[0]!.seq).toBe(firstKept + 1);
  });

  it('recovers every complete entry after a torn tail and keeps appending', async () => {
    const spool = await openSpool();
    for (let i = 1; i <= 100; i++) await spool.append(record(i));
    await spool.close();
    const [segment] = await segmentFiles();
    const path = join(dir, segment!);
    const intactBytes = (await stat(path)).size;
    // A half-written entry: a full header promising more payload than follows.
    const payload = encodeRecord(record(101));
    await appendFile(path, Buffer.concat([encodeHeader(101, payload), payload.subarray(0, 5)]));

    const reopened = await openSpool();
    expect(reopened.lastSeq).toBe(100);
    expect((await stat(path)).size).toBe(intactBytes);
    const all = await readAll(reopened);
    expect(all).toHaveLength(100);
    expect(all[99]).toEqual(record(100));
    expect(await reopened.append(record(101))).toBe(101);
    expect((await readRecords(reopened, 101))[0]).toEqual(record(101));
  });

  it('treats a zero-filled or garbled tail as torn', async () => {
    const spool = await openSpool();
    for (let i = 1; i <= 10; i++) await spool.append(record(i));
    await spool.close();
    const [segment] = await segmentFiles();
    await appendFile(join(dir, segment!), Buffer.alloc(4096));
    const reopened = await openSpool();
    expect(reopened.lastSeq).toBe(10);
    await reopened.close();
    // Garbage whose length field looks plausible but whose checksum does not match.
    const payload = encodeRecord(record(11));
    const header = encodeHeader(11, payload);
    // `>>> 0`: XOR gives a signed int32, which writeUInt32LE refuses when the CRC has its top bit.
    header.writeUInt32LE((header.readUInt32LE(4) ^ 1) >>> 0, 4);
    await appendFile(join(dir, segment!), Buffer.concat([header, payload]));
    const again = await openSpool();
    expect(again.lastSeq).toBe(10);
    expect(await readAll(again)).toHaveLength(10);
  });

  it('loses only a damaged record in the middle of 1000: the 999 others read in order, a warning in its place', async () => {
    const spool = await openSpool();
    for (let i = 1; i <= 1000; i++) await spool.append(record(i));
    await spool.close();
    const [segment] = await segmentFiles();
    const path = join(dir, segment!);
    // Two flipped bytes in record 500: one in its length field, one in its payload.
    const offset = await entryOffset(path, 500);
    await flipByte(path, offset + 1);
    await flipByte(path, offset + 20);
    const before = incidents().length;

    const reopened = await openSpool();
    expect(reopened.lastSeq).toBe(1000);
    const reported = incidents().slice(before);
    expect(reported).toHaveLength(1);
    expect(reported[0]).toMatchObject({ kind: 'damaged', code: 'ERR_STATE_DAMAGED' });
    expect(reported[0]!.subject).toContain(path);
    expect(reported[0]!.detail).toContain('record(s) 500–500 lost');

    const all = await readAll(reopened);
    expect(all).toHaveLength(1000);
    expect(all.filter((r) => !isSpoolGapRecord(r))).toEqual(
      Array.from({ length: 1000 }, (_, i) => record(i + 1)).filter((r) => r.seq !== 500),
    );
    expect(all[499]).toMatchObject({
      stream: 'warning',
      seq: 500,
      gap: { droppedRecords: 1, fromSeq: 500, toSeq: 500 },
    });
    expect(String(all[499]!.data)).toContain('ERR_STATE_DAMAGED');
    // Appends go on after the last record; acknowledging past the damage consumes the warning.
    expect(await reopened.append(record(1001))).toBe(1001);
    await reopened.ack(500);
    expect((await readRecords(reopened, 1, { maxRecords: 1 }))[0]).toEqual(record(501));
  });

  it('steps over a zeroed block in a segment that is not the last, losing only the records it covers', async () => {
    const spool = await openSpool({ segmentBytes: 64 * 1024 });
    for (let i = 1; i <= 3000; i++) await spool.append(record(i));
    await spool.close();
    const files = await segmentFiles();
    expect(files.length).toBeGreaterThan(1);
    const path = join(dir, files[0]!);
    const from = await entryOffset(path, 100);
    const handle = await openFile(path, 'r+');
    await handle.write(Buffer.alloc(200), 0, 200, from + 5);
    await handle.close();
    const reopened = await openSpool({ segmentBytes: 64 * 1024 });
    const all = await readAll(reopened);
    const gaps = all.filter(isSpoolGapRecord);
    expect(gaps).toHaveLength(1);
    const { fromSeq, toSeq } = gaps[0]!.gap;
    expect(fromSeq).toBe(100);
    expect(toSeq).toBeGreaterThan(100);
    expect(all.filter((r) => !isSpoolGapRecord(r)).map((r) => r.seq)).toEqual(
      Array.from({ length: 3000 }, (_, i) => i + 1).filter((seq) => seq < fromSeq || seq > toSeq),
    );
  });

  it('cuts a truncated tail back to its last complete record and reports it', async () => {
    const spool = await openSpool();
    for (let i = 1; i <= 1000; i++) await spool.append(record(i));
    await spool.close();
    const [segment] = await segmentFiles();
    const path = join(dir, segment!);
    await truncate(path, (await stat(path)).size - 7);
    const before = incidents().length;
    const reopened = await openSpool();
    expect(reopened.lastSeq).toBe(999);
    expect(incidents().slice(before)).toEqual([
      expect.objectContaining({
        kind: 'damaged',
        code: 'ERR_STATE_DAMAGED',
        subject: `spool segment ${path}`,
      }),
    ]);
    expect((await readAll(reopened)).map((r) => r.seq)).toEqual(Array.from({ length: 999 }, (_, i) => i + 1));
  });

  it('rejects appends and reads once closed', async () => {
    const spool = await openSpool({ maxBytes: 16 * 1024 });
    let seq = 0;
    while (spool.writable) seq = await spool.append(record(seq + 1, 'z'.repeat(500)));
    const blocked = expect(spool.append(record(seq + 1))).rejects.toMatchObject({ code: 'ERR_SPOOL_CLOSED' });
    await spool.close();
    await blocked;
    await expect(spool.read(1)).rejects.toMatchObject({ code: 'ERR_SPOOL_CLOSED' });
  });
});

/** Byte offset of record `seq`'s entry in a segment file (walking the length fields). */
async function entryOffset(path: string, seq: number): Promise<number> {
  const bytes = await readFile(path);
  let at = 0;
  while (bytes.readUInt32LE(at + 8) !== seq) at += 16 + bytes.readUInt32LE(at);
  return at;
}

async function flipByte(path: string, offset: number): Promise<void> {
  const handle = await openFile(path, 'r+');
  try {
    const one = Buffer.alloc(1);
    await handle.read(one, 0, 1, offset);
    one[0] = one[0]! ^ 0xff;
    await handle.write(one, 0, 1, offset);
  } finally {
    await handle.close();
  }
}
