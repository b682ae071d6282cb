/**
 * The quick start: one ThreadJob and one BackgroundJob managed with the same verbs, as
 * `Start-ThreadJob` and `Start-Job` would be in PowerShell.
 */
import { JobManager } from '@rjob/core';
import { processJobType } from '@rjob/job-process';
import { threadJobType } from '@rjob/job-thread';

const jobs = new JobManager({ types: [threadJobType(), processJobType()] });
try {
  const thread = await jobs.start(
    'thread',
    {
      fn: async function* (ctx: { information(v: unknown): void }, count: number) {
        ctx.information(`counting to ${count} on a worker thread`);
        for (let i = 1; i <= count; i++) yield { i, square: BigInt(i) ** 2n, at: new Date() };
      },
      args: [3],
    },
    { name: 'squares' },
  );
  const proc = await jobs.start(
    'process',
    { command: 'echo "hello from $(uname -s) pid $$"; echo oops >&2' },
    { name: 'hello' },
  );

  printTable(jobs.get());
  await jobs.wait([thread, proc]);
  printTable(jobs.get());

  for (const job of [thread, proc]) {
    console.log(`\n# receive ${job.name}`);
    for (const record of await jobs.receive(job)) {
      console.log(`  [${record.stream}]`, record.data);
    }
  }
  await jobs.remove([thread, proc]);
} finally {
  await jobs.close();
}

function printTable(list: ReturnType<JobManager['get']>): void {
  const rows = list.map((j) => [
    String(j.id),
    j.name,
    j.type,
    j.state,
    j.hasMoreData ? 'True' : 'False',
    j.location,
    clip(j.command, 50),
  ]);
  const head = ['Id', 'Name', 'Type', 'State', 'HasMoreData', 'Location', 'Command'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  console.log();
  for (const row of [head, ...rows]) console.log(row.map((cell, i) => cell.padEnd(widths[i]!)).join('  '));
}

function clip(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}
