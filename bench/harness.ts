/** Tiny benchmark helpers: warm-up, repeated runs, mean and median, ratios against a baseline. */
import type { Session } from '@rjob/core';

export interface BenchResult {
  name: string;
  iterations: number;
  meanMs: number;
  medianMs: number;
  /** Name of the baseline this result is compared against. */
  baseline?: string;
  /** meanMs / baseline meanMs (for times) or baseline / this (for rates): below 1 is faster. */
  ratio?: number;
  /** Extra figure, e.g. records/s or MB/s. */
  rate?: { value: number; unit: string };
}

/** Runs `fn` `iterations` times after a tenth as warm-up; `fn` may be async. */
export async function measure(name: string, iterations: number, fn: () => unknown): Promise<BenchResult> {
  const warm = Math.max(1, Math.floor(iterations / 10));
  for (let i = 0; i < warm; i++) await fn();
  const samples: number[] = [];
  for (let i = 0; i < iterations; i++) {
    const t0 = performance.now();
    await fn();
    samples.push(performance.now() - t0);
  }
  samples.sort((a, b) => a - b);
  const meanMs = samples.reduce((a, b) => a + b, 0) / samples.length;
  return { name, iterations, meanMs, medianMs: samples[Math.floor(samples.length / 2)]! };
}

export function compare(result: BenchResult, baseline: BenchResult): BenchResult {
  return { ...result, baseline: baseline.name, ratio: result.meanMs / baseline.meanMs };
}

/** One timed bulk run as MiB/s; against a baseline the ratio is this rate / the baseline's rate. */
export function throughput(name: string, bytes: number, ms: number, baseline?: BenchResult): BenchResult {
  const value = bytes / 2 ** 20 / (ms / 1000);
  return {
    name,
    iterations: 1,
    meanMs: ms,
    medianMs: ms,
    rate: { value, unit: 'MiB/s' },
    ...(baseline?.rate ? { baseline: baseline.name, ratio: value / baseline.rate.value } : {}),
  };
}

/** Runs `command` through `session.invoke`; the bytes of its output lines, newlines included. */
export async function invokeOutputBytes(
  session: Session<unknown>,
  command: string,
  stdout: 'lines' | 'bytes' = 'lines',
): Promise<number> {
  let bytes = 0;
  const invocation = session.invoke({ definition: { command, stdout } });
  if (stdout === 'bytes') {
    for await (const record of invocation) bytes += (record.data as Uint8Array).byteLength;
  } else {
    for await (const record of invocation) bytes += String(record.data).length + 1;
  }
  await invocation.result;
  return bytes;
}

export function printResults(title: string, results: BenchResult[]): void {
  console.log(`\n## ${title}`);
  for (const r of results) {
    const time = r.meanMs < 1 ? `${(r.meanMs * 1000).toFixed(1)} µs` : `${r.meanMs.toFixed(2)} ms`;
    const median = r.medianMs < 1 ? `${(r.medianMs * 1000).toFixed(1)} µs` : `${r.medianMs.toFixed(2)} ms`;
    const rate = r.rate ? `  ${formatRate(r.rate.value)} ${r.rate.unit}` : '';
    const ratio = r.ratio === undefined ? '' : `  ratio ${r.ratio.toFixed(3)}× vs ${r.baseline}`;
    console.log(
      `  ${r.name.padEnd(62)} mean ${time.padStart(10)}  median ${median.padStart(10)}${rate}${ratio}`,
    );
  }
}

function formatRate(value: number): string {
  return value >= 1e6
    ? `${(value / 1e6).toFixed(2)}M`
    : value >= 1e3
      ? `${(value / 1e3).toFixed(1)}k`
      : value.toFixed(1);
}

/** Ends the agent daemon whose pid file is in `stateDir` (its process group too if it will not go), then the dir. */
export async function stopAgentIn(stateDir: string): Promise<void> {
  const { readFile, rm } = await import('node:fs/promises');
  const { join } = await import('node:path');
  const pid = Number((await readFile(join(stateDir, 'agent.pid'), 'utf8').catch(() => '')).trim());
  const alive = (): boolean => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  if (pid && alive()) {
    process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 250 && alive(); i++) await new Promise((resolve) => setTimeout(resolve, 20));
    // Its jobs are in its own process group; take them too if it would not go.
    if (alive()) process.kill(-pid, 'SIGKILL');
  }
  await rm(stateDir, { recursive: true, force: true });
}
