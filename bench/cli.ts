/**
 * `rjob` start-up: the BUILT command line (apps/cli/bin/rjob.cjs running dist/bundle) against
 * `node -e 0`, samples interleaved in the same run, with a running local agent in a temporary state
 * directory. Ratios are of medians. Target (issue 15): `rjob get` ≤ 1.3× `node -e 0`.
 *
 * With `rjob get` runs a third series, the floor: cli-floor-client.cjs, a Node program that lists
 * the jobs with the fewest round trips protocol v1 allows and no rjob module (node start, one
 * connection, hello+open, then the request). `rjob get` is shown against it too, so what is left
 * above what any Node client must pay is visible (docs/decisions.md, "CLI start-up: where the time
 * goes").
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchResult } from './harness.js';

const BIN = fileURLToPath(new URL('../apps/cli/bin/rjob.cjs', import.meta.url));
const BUNDLE = fileURLToPath(new URL('../apps/cli/dist/bundle/rjob.cjs', import.meta.url));
const FLOOR = fileURLToPath(new URL('./cli-floor-client.cjs', import.meta.url));
const SAMPLES = 30;

/**
 * Preloaded into every timed process: prints the CPU time (user + system, all threads) it used, at
 * exit. On a shared or virtual machine the wall time of a 30 ms process wanders by several ms from
 * run to run; its CPU time does not, so the bench reports both.
 */
const CPU_PRELOAD = `process.on('exit', () => { const u = process.cpuUsage(); require('node:fs').writeSync(2, '\\nrjob-bench-cpu ' + (u.user + u.system) / 1000 + '\\n'); });`;
let preload = '';

function timed(args: string[], env: NodeJS.ProcessEnv): { ms: number; cpu: number } {
  const t0 = performance.now();
  const out = spawnSync(process.execPath, ['--require', preload, ...args], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const ms = performance.now() - t0;
  if (out.status !== 0) throw new Error(`node ${args.join(' ')} exited ${out.status}: ${out.stderr}`);
  const cpu = Number(/rjob-bench-cpu ([\d.]+)/.exec(out.stderr.toString())?.[1] ?? Number.NaN);
  return { ms, cpu };
}

function stats(name: string, samples: number[]): BenchResult {
  const sorted = [...samples].sort((a, b) => a - b);
  const meanMs = sorted.reduce((a, b) => a + b, 0) / sorted.length;
  return { name, iterations: sorted.length, meanMs, medianMs: sorted[Math.floor(sorted.length / 2)]! };
}

export async function benchCli(): Promise<BenchResult[]> {
  if (!existsSync(BUNDLE)) throw new Error('bench cli measures the built CLI: run npm run build first');
  const dir = await mkdtemp(join(tmpdir(), 'rjob-bench-cli-'));
  preload = join(dir, 'cpu.cjs');
  await writeFile(preload, CPU_PRELOAD);
  // Only what node needs: the bench's own tsx loader and conditions must not reach the CLI.
  const env = { PATH: process.env.PATH, HOME: dir, RJOB_STATE_DIR: join(dir, 'state') };
  const results: BenchResult[] = [];
  try {
    timed([BIN, 'agent', 'start'], env);
    timed([BIN, 'start', '--name', 'kept', '--', 'echo kept'], env);
    timed([BIN, 'wait', 'kept'], env);
    const cases: [string, string[]][] = [
      ['rjob get', ['get']],
      ['rjob receive --keep (a finished job, one line)', ['receive', '--keep', 'kept']],
      // Last: each run adds a job, which later `get`s would list.
      ['rjob start -- true', ['start', '--', 'true']],
    ];
    for (const [label, args] of cases) {
      const raw: { ms: number; cpu: number }[] = [];
      const cli: { ms: number; cpu: number }[] = [];
      const floor: { ms: number; cpu: number }[] = [];
      const withFloor = args[0] === 'get';
      for (let i = 0; i < 3; i++) timed([BIN, ...args], env); // warm the page cache
      for (let i = 0; i < SAMPLES; i++) {
        raw.push(timed(['-e', '0'], env));
        if (withFloor) floor.push(timed([FLOOR, join(dir, 'state', 'agent.sock')], env));
        cli.push(timed([BIN, ...args], env));
      }
      for (const kind of ['ms', 'cpu'] as const) {
        const what = kind === 'ms' ? '' : ' [CPU time]';
        const of = (samples: { ms: number; cpu: number }[]) => samples.map((sample) => sample[kind]);
        const base = stats(`node -e 0 (interleaved with ${label})${what}`, of(raw));
        const result = stats(`${label}${what}`, of(cli));
        results.push(base);
        if (withFloor) {
          const least = stats(
            `floor: node, one connection, hello+open, job.get (cli-floor-client.cjs)${what}`,
            of(floor),
          );
          results.push({ ...least, baseline: 'node -e 0', ratio: least.medianMs / base.medianMs });
          results.push({
            ...result,
            name: `${label} (against the floor)${what}`,
            baseline: 'the floor',
            ratio: result.medianMs / least.medianMs,
          });
        }
        results.push({ ...result, baseline: 'node -e 0', ratio: result.medianMs / base.medianMs });
      }
    }
    return results;
  } finally {
    spawnSync(process.execPath, [BIN, 'agent', 'stop'], { env, stdio: 'ignore' });
    await rm(dir, { recursive: true, force: true });
  }
}
