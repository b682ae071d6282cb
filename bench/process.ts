/** BackgroundJob: start → exit vs a raw `child_process.spawn` of the same command. */
import { spawn } from 'node:child_process';
import { JobManager } from '@rjob/core';
import { processJobType } from '@rjob/job-process';
import { type BenchResult, compare, measure } from './harness.js';

function rawSpawn(file: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.resume();
    child.stderr.resume();
    child.once('error', reject);
    child.once('close', () => resolve());
  });
}

export async function benchProcess(): Promise<BenchResult[]> {
  const jobs = new JobManager({ types: [processJobType()] });
  const results: BenchResult[] = [];
  try {
    const cases = [
      {
        label: '/bin/sh -c true',
        raw: () => rawSpawn('/bin/sh', ['-c', 'true']),
        def: { command: 'true' },
        n: 200,
      },
      {
        label: 'node -e 0',
        raw: () => rawSpawn(process.execPath, ['-e', '0']),
        def: { file: process.execPath, args: ['-e', '0'] },
        n: 30,
      },
      {
        label: 'node child running JS ({ eval }) vs node -e 0',
        raw: () => rawSpawn(process.execPath, ['-e', '0']),
        def: { eval: '' },
        n: 30,
      },
    ];
    // Interleave raw and job runs per case so machine noise hits both alike.
    for (const c of cases) {
      const raw = await measure(`raw: spawn ${c.label} → exit`, c.n, c.raw);
      const job = await measure(`BackgroundJob: ${c.label} start → exit`, c.n, async () => {
        const j = await jobs.start('process', c.def);
        await jobs.wait(j);
        await jobs.remove(j);
      });
      results.push(raw, compare(job, raw));
    }
    return results;
  } finally {
    await jobs.close();
  }
}
