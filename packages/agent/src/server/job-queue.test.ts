import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineJobType, type Job, type JobContext, JobManager } from '@rjob/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { JobQueue } from './job-queue.js';
import type { JobWork } from './job-work.js';

/** A job type whose jobs run until the test finishes them. */
function manualType() {
  const running = new Map<number, JobContext>();
  const type = defineJobType<{ n: number }>({
    name: 'Manual',
    describe: (definition) => `manual ${definition.n}`,
    start(_definition, context) {
      context.running();
      running.set(context.jobId, context);
      return { stop: () => context.finish({ state: 'Stopped' }) };
    },
  });
  return { type, running };
}

let dir: string;
let jobs: JobManager;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rjob-queue-'));
  jobs = new JobManager();
});

afterEach(async () => {
  await jobs.close();
  await rm(dir, { recursive: true, force: true });
});

const tick = () => new Promise((resolve) => setImmediate(resolve));

async function queued(
  queue: JobQueue,
  type: ReturnType<typeof manualType>['type'],
  work: JobWork,
  deps: Job[] = [],
) {
  return jobs.start(queue.waitingType(type, work, deps, jobs), work.definition);
}

describe('JobQueue', () => {
  it('runs at most a group limit at once, in start order, and keeps groups in its file', async () => {
    const file = join(dir, 'groups.json');
    const queue = new JobQueue({ file });
    await queue.addGroup('g', 2);
    const manual = manualType();
    const started: Job[] = [];
    for (let n = 1; n <= 4; n++) {
      started.push(await queued(queue, manual.type, { type: 'Manual', definition: { n }, group: 'g' }));
    }
    await tick();
    expect(started.map((job) => job.state)).toEqual(['Running', 'Running', 'NotStarted', 'NotStarted']);
    manual.running.get(started[1]!.id)!.finish({ state: 'Completed' });
    await tick();
    expect(started.map((job) => job.state)).toEqual(['Running', 'Completed', 'Running', 'NotStarted']);
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual({ groups: { g: 2 } });
    expect(new JobQueue({ file }).groups().map((group) => [group.name, group.parallel])).toEqual([
      ['default', null],
      ['g', 2],
    ]);
  });

  it('once closed (agent shutdown), starts and fails nothing; stopped waiting jobs keep waiting', async () => {
    const queue = new JobQueue();
    await queue.addGroup('g', 1);
    const manual = manualType();
    const first = await queued(queue, manual.type, { type: 'Manual', definition: { n: 1 }, group: 'g' });
    const work: JobWork = { type: 'Manual', definition: { n: 2 }, group: 'g' };
    const second = await queued(queue, manual.type, work);
    const dependent: JobWork = { type: 'Manual', definition: { n: 3 } };
    const third = await queued(queue, manual.type, dependent, [first]);
    await tick();
    expect([first.state, second.state, third.state]).toEqual(['Running', 'NotStarted', 'NotStarted']);
    queue.close();
    await jobs.stop([first, second, third]);
    expect([first.state, second.state, third.state]).toEqual(['Stopped', 'Stopped', 'Stopped']);
    expect(manual.running.has(second.id)).toBe(false);
    expect([work.waiting, dependent.waiting]).toEqual([true, true]);
  });
});
