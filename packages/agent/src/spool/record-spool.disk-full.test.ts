import { join } from 'node:path';
import type { JobRecord } from '@rjob/core';
import { describe, expect, it } from 'vitest';
import { readRecords } from '../fixtures/spool-records.js';
import { mountTmpfs } from '../fixtures/tmpfs.js';
import { incidents } from '../incidents.js';
import { RecordSpool } from './record-spool.js';

function line(i: number): JobRecord {
  return {
    stream: 'output',
    data: `line ${i}`,
    seq: i,
    timeMs: 1_700_000_000_000 + i,
    jobId: 3,
    location: 'here',
  };
}

async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 10));
}

async function readAll(spool: RecordSpool): Promise<JobRecord[]> {
  const out: JobRecord[] = [];
  for (let next = 1; ; ) {
    const batch = await readRecords(spool, next);
    if (batch.length === 0) return out;
    out.push(...batch);
    next = batch.at(-1)!.seq + 1;
  }
}

describe('RecordSpool on a full disk', () => {
  it('pauses the output, warns in the stream, and loses no record once space is freed', async () => {
    await using tmpfs = await mountTmpfs(8 * 1024 * 1024);
    const spool = await RecordSpool.open({ dir: join(tmpfs.dir, 'spool'), writeBufferBytes: 64 * 1024 });
    try {
      const before = incidents().length;
      await tmpfs.fill();
      const total = 50_000;
      let appended = 0;
      const appending = (async () => {
        for (let from = 1; from <= total; from += 500) {
          await spool.appendMany(Array.from({ length: 500 }, (_, i) => line(from + i)));
          appended = from + 499;
        }
      })();
      await until(() => spool.pausedForSpace);
      // The producer is held back (the write buffer is full), and a reader gets what is written.
      await until(() => !spool.writable);
      expect(appended).toBeLessThan(total);
      const early = await readAll(spool);
      expect(early.every((record, i) => record.seq === i + 1)).toBe(true);
      expect(incidents().slice(before)).toEqual([
        expect.objectContaining({ kind: 'disk-full', code: 'ERR_DISK_FULL' }),
      ]);

      await tmpfs.free();
      await appending;
      await spool.seal();
      expect(spool.pausedForSpace).toBe(false);
      const all = await readAll(spool);
      const warnings = all.filter((record) => record.stream === 'warning');
      expect(warnings).toHaveLength(1);
      expect(String(warnings[0]!.data)).toContain('ERR_DISK_FULL');
      expect(all.filter((record) => record.stream === 'output').map((record) => record.data)).toEqual(
        Array.from({ length: total }, (_, i) => `line ${i + 1}`),
      );
      expect(all.map((record) => record.seq)).toEqual(Array.from({ length: total + 1 }, (_, i) => i + 1));
      expect(
        incidents()
          .slice(before)
          .map((incident) => incident.kind),
      ).toEqual(['disk-full', 'disk-space-back']);

      // And what is on disk reads back the same after a reopen.
      await spool.close();
      const reopened = await RecordSpool.open({ dir: join(tmpfs.dir, 'spool') });
      expect(await readAll(reopened)).toEqual(all);
      await reopened.close();
    } finally {
      await spool.close().catch(() => {});
    }
  });

  it('gives up with ERR_DISK_FULL, not a hang, when closed while the disk is still full', async () => {
    await using tmpfs = await mountTmpfs(1024 * 1024);
    const spool = await RecordSpool.open({ dir: join(tmpfs.dir, 'spool'), writeBufferBytes: 16 * 1024 });
    await tmpfs.fill();
    const appending = (async () => {
      for (let from = 1; ; from += 100)
        await spool.appendMany(Array.from({ length: 100 }, (_, i) => line(from + i)));
    })();
    const appendingFails = expect(appending).rejects.toMatchObject({
      code: expect.stringMatching(/ERR_DISK_FULL|ERR_SPOOL_CLOSED/),
    });
    await until(() => spool.pausedForSpace && !spool.writable);
    const before = incidents().length;
    await expect(spool.close()).rejects.toMatchObject({ code: 'ERR_DISK_FULL' });
    await appendingFails;
    // What could not be written is not lost silently.
    expect(incidents().slice(before)).toEqual([
      expect.objectContaining({ kind: 'lost', code: 'ERR_DISK_FULL' }),
    ]);
  });
});
