import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCode } from '../errors.js';
import { type InlineJobApi, inlineJobType } from '../testing/inline-job-type.js';
import type { Job } from './job.js';
import { JobManager } from './job-manager.js';
import type { JobRecord } from './records.js';

const MAX_BATCH = 1024;

let jobs: JobManager;
afterEach(async () => {
  await jobs?.close();
});

function manager(options: ConstructorParameters<typeof JobManager>[0] = {}) {
  jobs = new JobManager({ types: [inlineJobType()], ...options });
  return jobs;
}

/** A latch a test opens to let inline work go on. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, opened };
}

function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Waits, without timers, until `done()` holds; throws after many event-loop turns. */
async function until(done: () => boolean, turns = 10_000): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (done()) return;
    await tick();
  }
  throw new Error('condition not reached');
}

async function allBatches(m: JobManager, selector: Parameters<JobManager['receiveBatches']>[0]) {
  const batches: JobRecord[][] = [];
  for await (const batch of m.receiveBatches(selector)) batches.push(batch);
  return batches;
}

const range = (n: number, from = 0) => Array.from({ length: n }, (_, i) => from + i);

function expectWellFormed(batches: JobRecord[][]): void {
  for (const batch of batches) {
    expect(batch.length).toBeGreaterThan(0);
    expect(batch.length).toBeLessThanOrEqual(MAX_BATCH);
  }
}

describe('JobManager.receiveBatches', () => {
  it('yields arrays in emission order, every record exactly once, while the job runs', async () => {
    const m = manager();
    const total = 3_000;
    const job = await m.start('inline', {
      run: async (api: InlineJobApi) => {
        for (let i = 0; i < total; i++) {
          api.emit(i % 3 === 0 ? 'error' : 'output', i);
          // Yield now and then, so the consumer takes several smaller arrays.
          if (i % 250 === 249) await tick();
        }
      },
    });
    const batches = await allBatches(m, job);
    expectWellFormed(batches);
    expect(batches.length).toBeGreaterThan(1);
    const records = batches.flat();
    expect(records.map((r) => r.data)).toEqual(range(total));
    expect(records.map((r) => r.seq)).toEqual(range(total, 1));
    expect(records.map((r) => r.stream)).toEqual(range(total).map((i) => (i % 3 === 0 ? 'error' : 'output')));
    expect(records.every((r) => r.jobId === job.id && !r.reason)).toBe(true);
    expect(job.state).toBe('Completed');
  });

  it('consumes what it yields: a later receive gets nothing and hasMoreData turns false', async () => {
    const m = manager();
    const job = await m.start('inline', {
      run: (api: InlineJobApi) => {
        for (let i = 0; i < 10; i++) api.emit('output', i);
      },
    });
    await m.wait(job);
    expect(job.hasMoreData).toBe(true);
    const batches = await allBatches(m, job);
    expect(batches.flat().map((r) => r.data)).toEqual(range(10));
    expect(await m.receive(job)).toEqual([]);
    expect(job.hasMoreData).toBe(false);
    // A second iteration of a finished, drained job ends at once with nothing.
    expect(await allBatches(m, job)).toEqual([]);
  });

  it('consumes each array as it is yielded, not only at the end', async () => {
    const m = manager();
    const g = gate();
    const job = await m.start('inline', {
      run: async (api: InlineJobApi) => {
        for (let i = 0; i < 5; i++) api.emit('output', i);
        await g.opened;
        api.emit('output', 5);
      },
    });
    const iterator = m.receiveBatches(job);
    const first = await iterator.next();
    expect(first.done).toBe(false);
    expect((first.value as JobRecord[]).map((r) => r.data)).toEqual(range(5));
    // The records handed out are gone from the job, although the iteration is not over.
    expect(await m.receive(job, { keep: true })).toEqual([]);
    g.open();
    const rest: JobRecord[] = [];
    for (let step = await iterator.next(); !step.done; step = await iterator.next()) rest.push(...step.value);
    expect(rest.map((r) => r.data)).toEqual([5]);
  });

  it('delivers every record of a job that finished holding more than 1024 of them', async () => {
    const m = manager();
    const total = 5 * MAX_BATCH + 17;
    const job = await m.start('inline', {
      run: (api: InlineJobApi) => {
        for (let i = 0; i < total; i++) api.emit('output', i);
      },
    });
    await m.wait(job);
    expect(job.state).toBe('Completed');
    const batches = await allBatches(m, job);
    expectWellFormed(batches);
    expect(batches.length).toBeGreaterThanOrEqual(6);
    expect(batches.flat().map((r) => r.data)).toEqual(range(total));
    expect(await m.receive(job)).toEqual([]);
  });

  it('delivers everything when the job finishes with >1024 records left while the consumer holds an array', async () => {
    const m = manager();
    const total = 3 * MAX_BATCH + 1;
    const g = gate();
    const job = await m.start('inline', {
      run: async (api: InlineJobApi) => {
        api.emit('output', 0);
        await g.opened;
        for (let i = 1; i < total; i++) api.emit('output', i);
      },
    });
    const iterator = m.receiveBatches(job);
    const first = await iterator.next();
    expect((first.value as JobRecord[]).map((r) => r.data)).toEqual([0]);
    // The job writes the rest and finishes while the consumer still holds the first array.
    g.open();
    await m.wait(job);
    const rest: JobRecord[][] = [];
    for (let step = await iterator.next(); !step.done; step = await iterator.next()) rest.push(step.value);
    expectWellFormed(rest);
    expect(rest.flat().map((r) => r.data)).toEqual(range(total - 1, 1));
  });

  it("puts a Failed job's reason last, alone in its array, after all records", async () => {
    const m = manager();
    const total = 2 * MAX_BATCH + 3;
    const job = await m.start('inline', {
      run: (api: InlineJobApi) => {
        for (let i = 0; i < total; i++) api.emit('output', i);
        throw new Error('kaput');
      },
    });
    await m.wait(job);
    expect(job.state).toBe('Failed');
    const batches = await allBatches(m, job);
    expectWellFormed(batches);
    const last = batches.at(-1)!;
    expect(last).toHaveLength(1);
    expect(last[0]).toMatchObject({ stream: 'error', reason: true, jobId: job.id });
    expect(last[0]!.data).toBe(job.reason);
    expect(job.reason?.code).toBe(ErrorCode.JobThrew);
    const before = batches.slice(0, -1).flat();
    expect(before.some((r) => r.reason)).toBe(false);
    expect(before.map((r) => r.data)).toEqual(range(total));
  });

  it("a Failed job's reason comes alone even when the job failed while records were being taken", async () => {
    const m = manager();
    const g = gate();
    const job = await m.start('inline', {
      run: async (api: InlineJobApi) => {
        api.emit('output', 'first');
        await g.opened;
        api.emit('output', 'second');
        throw new Error('late');
      },
    });
    const iterator = m.receiveBatches(job);
    const first = await iterator.next();
    expect((first.value as JobRecord[]).map((r) => r.data)).toEqual(['first']);
    g.open();
    const rest: JobRecord[][] = [];
    for (let step = await iterator.next(); !step.done; step = await iterator.next()) rest.push(step.value);
    expect(rest.at(-1)).toHaveLength(1);
    expect(rest.at(-1)![0]).toMatchObject({ reason: true, stream: 'error' });
    expect(
      rest
        .slice(0, -1)
        .flat()
        .map((r) => r.data),
    ).toEqual(['second']);
  });

  it('gives each array from one job only, for a parent with children', async () => {
    const m = manager();
    const child = (tag: string) => ({
      type: 'inline',
      definition: {
        run: async (api: InlineJobApi) => {
          for (let i = 0; i < 1500; i++) {
            api.emit('output', `${tag}${i}`);
            if (i % 400 === 0) await tick();
          }
        },
      },
    });
    const parent = m.startGroup({ children: [child('a'), child('b')] });
    const batches = await allBatches(m, parent);
    expectWellFormed(batches);
    for (const batch of batches) expect(new Set(batch.map((r) => r.jobId)).size).toBe(1);
    const [a, b] = parent.children as [Job, Job];
    const ofJob = (job: Job) =>
      batches
        .flat()
        .filter((r) => r.jobId === job.id)
        .map((r) => r.data);
    expect(ofJob(a)).toEqual(range(1500).map((i) => `a${i}`));
    expect(ofJob(b)).toEqual(range(1500).map((i) => `b${i}`));
  });

  it('flow control: a producer paused above maxBufferedBytes resumes once an array is taken', async () => {
    const m = manager({ maxBufferedBytes: 10_000 });
    let paused = false;
    let resumedAfterPause = 0;
    let produced = 0;
    const total = 1_000;
    const job = await m.start('inline', {
      run: async (api: InlineJobApi) => {
        await tick();
        for (let i = 0; i < total; i++) {
          produced++;
          if (!api.emit('output', i, 100)) {
            paused = true;
            await api.writable();
            resumedAfterPause++;
          }
        }
      },
    });
    // Nobody receives: the producer stops at the mark (~100 records of 100 bytes).
    await until(() => paused);
    for (let i = 0; i < 20; i++) await tick();
    expect(resumedAfterPause).toBe(0);
    const stuckAt = produced;
    expect(stuckAt).toBeLessThan(total);
    expect(stuckAt).toBeLessThanOrEqual(10_000 / 100 + 1);

    const iterator = m.receiveBatches(job);
    const first = await iterator.next();
    const firstBatch = first.value as JobRecord[];
    expect(firstBatch.map((r) => r.data)).toEqual(range(stuckAt));
    // Taking that array resumed the producer.
    await until(() => resumedAfterPause > 0);
    expect(produced).toBeGreaterThan(stuckAt);

    const rest: JobRecord[] = [];
    for (let step = await iterator.next(); !step.done; step = await iterator.next()) rest.push(...step.value);
    expect([...firstBatch, ...rest].map((r) => r.data)).toEqual(range(total));
    expect(job.state).toBe('Completed');
  });

  it('autoRemove removes the jobs once everything was delivered', async () => {
    const m = manager();
    const job = await m.start('inline', {
      run: (api: InlineJobApi) => {
        for (let i = 0; i < 2_000; i++) api.emit('output', i);
      },
    });
    const records: JobRecord[] = [];
    for await (const batch of m.receiveBatches(job, { autoRemove: true })) records.push(...batch);
    expect(records).toHaveLength(2_000);
    expect(m.get()).toEqual([]);
  });
});
