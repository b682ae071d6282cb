/** ThreadJob: warm start → first record vs a cold `new Worker`; records/s from one job to a receiver. */
import { Worker } from 'node:worker_threads';
import { JobManager } from '@rjob/core';
import { threadJobType } from '@rjob/job-thread';
import { type BenchResult, compare, measure } from './harness.js';

export async function benchThread(): Promise<BenchResult[]> {
  const cold = await measure('raw: cold new Worker → first message', 30, async () => {
    const worker = new Worker("require('node:worker_threads').parentPort.postMessage(1)", { eval: true });
    await new Promise((resolve) => worker.once('message', resolve));
    await worker.terminate();
  });

  const jobs = new JobManager({ types: [threadJobType({ throttleLimit: 2 })] });
  try {
    const firstRecord = async () => {
      const job = await jobs.start('thread', { fn: () => 1 });
      for await (const _ of jobs.receiveStream(job)) break;
      await jobs.wait(job);
      await jobs.remove(job);
    };
    const warm = await measure('ThreadJob: warm pool start → first record', 2_000, firstRecord);

    const count = 1_000_000;
    const t0 = performance.now();
    const job = await jobs.start('thread', {
      fn: function* (_ctx: unknown, n: number) {
        for (let i = 0; i < n; i++) yield i;
      },
      args: [count],
    });
    let received = 0;
    for await (const _ of jobs.receiveStream(job)) received++;
    const elapsedMs = performance.now() - t0;
    if (received !== count) throw new Error(`received ${received} of ${count}`);
    const rate: BenchResult = {
      name: `ThreadJob: ${count.toLocaleString('en')} small records → receiver`,
      iterations: 1,
      meanMs: elapsedMs,
      medianMs: elapsedMs,
      rate: { value: count / (elapsedMs / 1000), unit: 'records/s (target ≥ 500k/s)' },
    };
    return [cold, compare(warm, cold), rate];
  } finally {
    await jobs.close();
  }
}
