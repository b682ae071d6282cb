import { JobManager, type JobRun, type JobType } from '@rjob/core';
import { afterEach, expect, it } from 'vitest';
import type { ProcessJobDefinition } from './definitions.js';
import { processJobType } from './process-job-type.js';
import { eventually } from './test-utils.js';

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;
const LINE_BYTES = 1024; // 1023 characters and a newline: 2^20 lines make exactly 1 GiB
const MAX_BUFFERED_BYTES = 64 * MIB; // the manager's default, stated here so the bound below follows from it
const RSS_BOUND_BYTES = 256 * MIB;

let jobs: JobManager | undefined;
afterEach(async () => {
  await jobs?.close();
});

/** The process job type, counting the manager's pause/resume calls. */
function countingType() {
  const inner = processJobType();
  const counts = { pause: 0, resume: 0 };
  const type: JobType<ProcessJobDefinition> = {
    ...inner,
    async start(definition, context): Promise<JobRun> {
      const run = await inner.start(definition, context);
      return {
        stop: () => run.stop(),
        pause: () => {
          counts.pause++;
          run.pause?.();
        },
        resume: () => {
          counts.resume++;
          run.resume?.();
        },
      };
    },
  };
  return { type, counts };
}

it('keeps the manager under 256 MiB of RSS growth while a job prints 1 GiB to a draining receiver', async () => {
  const { type, counts } = countingType();
  jobs = new JobManager({ types: [type], maxBufferedBytes: MAX_BUFFERED_BYTES });
  const baseline = process.memoryUsage().rss;
  let peak = baseline;
  const sample = () => {
    peak = Math.max(peak, process.memoryUsage().rss);
  };
  const sampler = setInterval(sample, 20);

  try {
    const job = await jobs.start(type, {
      command: `yes "$(printf '%0${LINE_BYTES - 1}d' 0)" | head -c ${GIB}`,
    });
    // Nobody receives at first: the buffer fills to the high-water mark and the job is paused,
    // its pipe full and `yes` blocked, instead of the owner holding the whole gigabyte.
    await eventually(() => counts.pause > 0, 'the job to be paused');
    const pausedBytes = job.buffer.bytes;
    expect(pausedBytes).toBeGreaterThan(MAX_BUFFERED_BYTES);
    // Over the mark by at most what one read of the pipe had already decoded.
    expect(pausedBytes).toBeLessThan(MAX_BUFFERED_BYTES + 2 * MIB);

    let bytes = 0;
    let records = 0;
    for await (const record of jobs.receiveStream(job)) {
      if (record.stream === 'output') bytes += (record.data as string).length + 1;
      // A receiver that yields to the event loop now and then, as a real one writing somewhere
      // does, so reading the pipe and receiving interleave. (Measured here: about 150–175 MiB of
      // growth, most of it the 64 MiB buffer filled above, as records, and garbage not yet
      // collected.)
      if (++records % 4096 === 0) {
        sample();
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    sample();

    expect(job.state).toBe('Completed');
    expect(bytes).toBe(GIB);
    expect(records).toBe(GIB / LINE_BYTES);
    expect(counts.resume).toBeGreaterThan(0);
    expect(peak - baseline).toBeLessThan(RSS_BOUND_BYTES);
  } finally {
    clearInterval(sampler);
  }
});

it('stops a job that is paused with nobody receiving', async () => {
  const { type, counts } = countingType();
  jobs = new JobManager({ types: [type], maxBufferedBytes: MIB });
  const shell = await jobs.start(type, { command: 'yes', stopGraceMs: 300 });
  const node = await jobs.start(type, {
    fn: async function* () {
      for (;;) yield 'x'.repeat(1000);
    },
    stopGraceMs: 300,
  });
  await eventually(() => counts.pause >= 2, 'both jobs to be paused');
  await jobs.stop([shell, node]);
  expect(shell.state).toBe('Stopped');
  expect(node.state).toBe('Stopped');
});
