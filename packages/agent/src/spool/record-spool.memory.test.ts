import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { followRecords } from '../fixtures/spool-records.js';
import { RecordSpool } from './record-spool.js';

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rjob-spool-memory-'));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

// The bound this test holds the spool to: resident memory may grow by at most 192 MiB while 1 GiB
// passes through a 64 MiB spool (measured: about 100–125 MiB, most of it decoded records and
// encode buffers waiting for the garbage collector). Retaining what was appended would grow it by
// more than 1 GiB.
const MAX_RSS_GROWTH_BYTES = 192 * 1024 * 1024;

it('keeps memory bounded while 1 GiB is appended, read and acknowledged', async () => {
  const spool = await RecordSpool.open({ dir, maxBytes: 64 * 1024 * 1024, policy: 'block' });
  const chunk = 'x'.repeat(64 * 1024);
  const records = (1024 * 1024 * 1024) / chunk.length;
  const baseline = process.memoryUsage().rss;
  let peak = baseline;

  const reader = (async () => {
    let received = 0;
    for await (const record of followRecords(spool, 1, { maxBytes: 4 * 1024 * 1024 })) {
      received++;
      if (record.seq % 64 === 0) await spool.ack(record.seq);
      if (record.seq === records) break;
    }
    return received;
  })();

  for (let i = 1; i <= records; i++) {
    await spool.append({ stream: 'output', data: chunk, seq: i, timeMs: i, jobId: 1, location: 'localhost' });
    if (i % 256 === 0) peak = Math.max(peak, process.memoryUsage().rss);
    expect(spool.bytes).toBeLessThanOrEqual(64 * 1024 * 1024 + 128 * 1024);
  }
  expect(await reader).toBe(records);
  peak = Math.max(peak, process.memoryUsage().rss);
  await spool.close();
  expect(peak - baseline).toBeLessThan(MAX_RSS_GROWTH_BYTES);
});
