/**
 * Local receive throughput: the BUILT command line's consuming `rjob receive NAME > /dev/null` of a
 * finished job with many lines, from a running local agent, against the raw baseline of the same
 * command's output read through a pipe, in the same run. RJOB_BENCH_RECEIVE_BIN points the bench at
 * another checkout's built bin (to compare two versions on one machine in one sitting);
 * RJOB_BENCH_RECEIVE_LINES sets the job's size (default 100,000 lines of 100 bytes).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, openSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchResult } from './harness.js';

const BIN =
  process.env.RJOB_BENCH_RECEIVE_BIN ?? fileURLToPath(new URL('../apps/cli/bin/rjob.cjs', import.meta.url));
const LINES = Number(process.env.RJOB_BENCH_RECEIVE_LINES ?? 100_000);
const SAMPLES = 5;
// 99 characters and a newline per line.
const COMMAND = `yes "$(head -c 99 /dev/zero | tr '\\0' x)" | head -n ${LINES}`;

function run(args: string[], env: NodeJS.ProcessEnv, toNull = false): number {
  const t0 = performance.now();
  const out = spawnSync(args[0]!, args.slice(1), {
    env,
    stdio: ['ignore', toNull ? openSync('/dev/null', 'w') : 'pipe', 'pipe'],
    maxBuffer: 1 << 30,
  });
  const ms = performance.now() - t0;
  if (out.status !== 0) throw new Error(`${args.join(' ')} exited ${out.status}: ${out.stderr}`);
  return ms;
}

function median(samples: number[]): number {
  return [...samples].sort((a, b) => a - b)[Math.floor(samples.length / 2)]!;
}

export async function benchReceive(): Promise<BenchResult[]> {
  if (!existsSync(BIN))
    throw new Error(`bench receive measures the built CLI (${BIN}): run npm run build first`);
  const dir = await mkdtemp(join(tmpdir(), 'rjob-bench-receive-'));
  const env = { PATH: process.env.PATH, HOME: dir, RJOB_STATE_DIR: join(dir, 'state') };
  const node = process.execPath;
  const bytes = LINES * 100;
  const mib = bytes / (1024 * 1024);
  try {
    run([node, BIN, 'agent', 'start'], env);
    for (let i = 0; i < SAMPLES; i++) run([node, BIN, 'start', '--name', `r${i}`, '--', COMMAND], env);
    for (let i = 0; i < SAMPLES; i++) run([node, BIN, 'wait', `r${i}`], env);
    const raw: number[] = [];
    const cli: number[] = [];
    for (let i = 0; i < SAMPLES; i++) {
      // The baseline reads the same output through a pipe into this process, as the CLI's does.
      raw.push(run(['/bin/sh', '-c', COMMAND], env));
      cli.push(run([node, BIN, 'receive', `r${i}`], env, true));
    }
    const rawMs = median(raw);
    const cliMs = median(cli);
    const rawRate = mib / (rawMs / 1000);
    const cliRate = mib / (cliMs / 1000);
    return [
      {
        name: `raw: the command's ${LINES} lines through a pipe`,
        iterations: SAMPLES,
        meanMs: rawMs,
        medianMs: rawMs,
        rate: { value: rawRate, unit: 'MiB/s' },
      },
      {
        name: `rjob receive (consuming) of ${LINES} lines > /dev/null`,
        iterations: SAMPLES,
        meanMs: cliMs,
        medianMs: cliMs,
        rate: { value: cliRate, unit: 'MiB/s' },
        baseline: 'raw pipe',
        // Time ratio: below 1 would be faster than reading the command's own output.
        ratio: cliMs / rawMs,
      },
    ];
  } finally {
    spawnSync(node, [BIN, 'agent', 'stop'], { env, stdio: 'ignore' });
    await rm(dir, { recursive: true, force: true });
  }
}
