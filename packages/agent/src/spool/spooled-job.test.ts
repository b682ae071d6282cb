import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type JobRecord, JobManager, RjobError } from '@rjob/core';
import { inlineJobType } from '@rjob/core/testing';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { followRecords, readRecords } from '../fixtures/spool-records.js';
import { JobStore } from '../store/job-store.js';
import type { RecordSpool } from './record-spool.js';
import { spoolJob } from './spooled-job.js';

let dir: string;
let manager: JobManager;
const inline = inlineJobType();

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rjob-spooled-'));
  manager = new JobManager({ types: [inline], maxBufferedBytes: 32 * 1024 });
});

afterEach(async () => {
  await manager.close();
  await rm(dir, { recursive: true, force: true });
});

async function readAll(spool: RecordSpool): Promise<JobRecord[]> {
  const out: JobRecord[] = [];
  for (let next = 1; ; ) {
    const batch = await readRecords(spool, next);
    if (batch.length === 0) return out;
    out.push(...batch);
    next = batch.at(-1)!.seq + 1;
  }
}

describe('spoolJob', () => {
  it('spools every record in order and persists the final state after them', async () => {
    const store = await JobStore.open({ dir });
    const job = await manager.start(inline, {
      async run(api) {
        for (let i = 1; i <= 500; i++) {
          if (
            !api.emit(i % 7 === 0 ? 'verbose' : 'output', {
              i,
              at: new Date(i),
              m: new Map([[i, BigInt(i)]]),
            })
          ) {
            await api.writable();
          }
        }
      },
    });
    const spooled = await spoolJob({ manager, job, store, sessionId: 's1', data: { definition: 'inline' } });
    await spooled.done;

    const spool = spooled.spools.get(job.id)!;
    expect(spool.sealed).toBe(true);
    const records = await readAll(spool);
    expect(records.map((r) => r.seq)).toEqual(Array.from({ length: 500 }, (_, i) => i + 1));
    expect(records[6]).toMatchObject({
      stream: 'verbose',
      data: { i: 7, at: new Date(7), m: new Map([[7, 7n]]) },
    });
    await spooled.close();

    const { jobs } = await (await JobStore.open({ dir })).load();
    expect(jobs).toHaveLength(1);
    expect(jobs[0]).toMatchObject({
      id: job.id,
      instanceId: job.instanceId,
      state: 'Completed',
      beginTime: job.beginTime,
      endTime: job.endTime,
      data: { definition: 'inline' },
      spoolDir: store.spoolDir('s1', job.instanceId),
    });
  });

  it('a full block spool pauses the producer through the manager, and resumes on ack', async () => {
    const store = await JobStore.open({ dir });
    let pauses = 0;
    const total = 3000;
    const job = await manager.start(inline, {
      async run(api) {
        for (let i = 1; i <= total && !api.signal.aborted; i++) {
          if (!api.emit('output', `${i}:${'p'.repeat(100)}`, 120)) {
            pauses++;
            await api.writable();
          }
        }
      },
    });
    const spooled = await spoolJob({ manager, job, store, sessionId: 's1', spool: { maxBytes: 16 * 1024 } });
    const spool = spooled.spools.get(job.id)!;
    const seen: number[] = [];
    for await (const record of followRecords(spool)) {
      seen.push(record.seq);
      // Acknowledge in batches (smaller than the bound, or nothing would ever free space), so the
      // spool fills up between acks.
      if (seen.length % 50 === 0 || record.seq === total) await spool.ack(record.seq);
    }
    await spooled.done;
    expect(seen).toEqual(Array.from({ length: total }, (_, i) => i + 1));
    expect(pauses).toBeGreaterThan(0);
    expect(spool.droppedRecords).toBe(0);
    await spooled.close();
  });

  it('keeps a Failed reason in the entry and turns an uncloneable value into an error record', async () => {
    const store = await JobStore.open({ dir });
    const job = await manager.start(inline, {
      async run(api) {
        api.emit('output', 1);
        api.emit('output', { callback: () => 1 });
        api.emit('output', 3);
        throw new RjobError('ERR_CUSTOM', 'boom');
      },
    });
    const spooled = await spoolJob({ manager, job, store, sessionId: 's1' });
    await spooled.done;
    const records = await readAll(spooled.spools.get(job.id)!);
    expect(records.map((r) => r.stream)).toEqual(['output', 'error', 'output']);
    expect(RjobError.hasCode(records[1]!.data, 'ERR_VALUE_NOT_CLONEABLE')).toBe(true);
    expect((records[1]!.data as RjobError).message).toContain('.callback');
    await spooled.close();
    const { jobs } = await store.load();
    expect(jobs[0]!.state).toBe('Failed');
    expect(jobs[0]!.reason).toMatchObject({ code: 'ERR_CUSTOM', message: 'boom' });
  });

  it('gives each child of a parent its own spool and persists the parent after them', async () => {
    const store = await JobStore.open({ dir });
    const parent = manager.startGroup({
      name: 'fan',
      children: ['a', 'b'].map((host) => ({
        type: 'inline',
        location: host,
        definition: {
          async run(api: { emit(stream: 'output', data: unknown): boolean }) {
            api.emit('output', `hello from ${host}`);
          },
        },
      })),
    });
    const spooled = await spoolJob({ manager, job: parent, store, sessionId: 's1' });
    await spooled.done;
    expect([...spooled.spools.keys()]).toEqual(parent.children.map((c) => c.id));
    for (const child of parent.children) {
      const [only] = await readAll(spooled.spools.get(child.id)!);
      expect(only).toMatchObject({ data: `hello from ${child.location}`, location: child.location });
    }
    await spooled.close();
    const { jobs } = await store.load();
    const stored = jobs.find((j) => j.id === parent.id)!;
    expect(stored).toMatchObject({ state: 'Completed', childIds: parent.children.map((c) => c.id) });
    expect(stored.spoolDir).toBeUndefined();
    expect(jobs.filter((j) => j.parentId === parent.id).map((j) => j.state)).toEqual([
      'Completed',
      'Completed',
    ]);
  });
});
