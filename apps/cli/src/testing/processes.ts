/**
 * The real `rjob` bin as a process a test can interrupt: started in a process group of its own (as
 * a shell's job control does), so a signal reaches the bin and the CLI process it runs (a terminal's
 * Ctrl-C goes to the whole foreground group), and never the agent daemon (its own group). Also the
 * checks the "nothing lost" tests share.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { constants } from 'node:os';
import { expect } from 'vitest';
import { ExitCode } from '../io.js';
import { BIN, type Sandbox } from './sandbox.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export interface BinProcess {
  child: ChildProcess;
  /** Everything the process wrote to stdout so far. */
  stdout(): string;
  stderr(): string;
  /** Resolves with the number of stdout bytes once at least `bytes` arrived (or the process ended). */
  stdoutReached(bytes: number): Promise<number>;
  /** Stops reading stdout: the process blocks once the pipe is full. */
  pauseStdout(): void;
  /** Sends a signal to the process group. */
  signal(signal: NodeJS.Signals): void;
  /** Resolves once the process ended and its output was read. `code` is 128+N for a signal N. */
  exited: Promise<{ code: number; signal: NodeJS.Signals | null }>;
}

const running = new Set<BinProcess>();

/** Runs `rjob ARGV` (bin/rjob.cjs) in its own process group. */
export function spawnBin(argv: string[], options: { env: NodeJS.ProcessEnv; cwd: string }): BinProcess {
  return spawnGroup(process.execPath, [BIN, ...argv], options);
}

/** Runs a shell script (whose last step usually `exec`s the bin) in its own process group. */
export function spawnScript(script: string, options: { env: NodeJS.ProcessEnv; cwd: string }): BinProcess {
  return spawnGroup('sh', ['-c', script], options);
}

function spawnGroup(
  file: string,
  args: string[],
  options: { env: NodeJS.ProcessEnv; cwd: string },
): BinProcess {
  const child = spawn(file, args, {
    cwd: options.cwd,
    env: options.env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let outBytes = 0;
  const waiters: Array<{ bytes: number; resolve: (n: number) => void }> = [];
  let ended = false;
  child.stdout!.on('data', (chunk: Buffer) => {
    out.push(chunk);
    outBytes += chunk.length;
    for (const waiter of waiters.filter((w) => outBytes >= w.bytes)) {
      waiters.splice(waiters.indexOf(waiter), 1);
      waiter.resolve(outBytes);
    }
  });
  child.stderr!.on('data', (chunk: Buffer) => err.push(chunk));
  const exited = new Promise<{ code: number; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      ended = true;
      for (const waiter of waiters.splice(0)) waiter.resolve(outBytes);
      resolve({ code: code ?? 128 + (signal ? constants.signals[signal] : 0), signal });
    });
  });
  const proc: BinProcess = {
    child,
    stdout: () => Buffer.concat(out).toString('utf8'),
    stderr: () => Buffer.concat(err).toString('utf8'),
    stdoutReached: (bytes) =>
      ended || outBytes >= bytes
        ? Promise.resolve(outBytes)
        : new Promise((resolve) => waiters.push({ bytes, resolve })),
    pauseStdout: () => child.stdout!.pause(),
    signal: (signal) => {
      try {
        process.kill(-child.pid!, signal);
      } catch {
        // The group is gone already.
      }
    },
    exited,
  };
  running.add(proc);
  void exited.finally(() => running.delete(proc)).catch(() => {});
  return proc;
}

/** Kills (SIGKILL, whole group) every bin process still running: for afterEach, also on failure. */
export async function killAllBins(): Promise<void> {
  const left = [...running];
  for (const proc of left) {
    proc.signal('SIGCONT');
    proc.signal('SIGKILL');
  }
  await Promise.allSettled(left.map((proc) => proc.exited));
}

/** The complete lines of a text (a last line without its newline was not written whole: dropped). */
export function completeLines(text: string): string[] {
  const lines = text.split('\n');
  lines.pop();
  return lines;
}

/**
 * Checks that two receives of a job that printed 1..n lost nothing: the first printed 1..a in
 * order (a may be 0), the second b..n in order with b <= a + 1, so every number arrived at least
 * once and the only repeats are the one run b..a (records in flight when the first one ended).
 * Returns a and b (b = n + 1 when the second printed nothing). Throws a readable error otherwise.
 */
export function checkLossless(
  first: readonly string[],
  second: readonly string[],
  n: number,
): { a: number; b: number } {
  const sequenceFrom = (lines: readonly string[], start: number, what: string): void => {
    for (let i = 0; i < lines.length; i++) {
      if (lines[i] !== String(start + i)) {
        throw new Error(
          `${what}: line ${i + 1} is ${JSON.stringify(lines[i])}, expected ${start + i} (not one contiguous run)`,
        );
      }
    }
  };
  sequenceFrom(first, 1, 'first receive');
  const a = first.length;
  const b = second.length === 0 ? n + 1 : Number(second[0]);
  if (!Number.isInteger(b)) throw new Error(`second receive starts with ${JSON.stringify(second[0])}`);
  sequenceFrom(second, b, 'second receive');
  if (b > a + 1)
    throw new Error(
      `lost lines ${a + 1}..${b - 1}: the first receive ended at ${a}, the second began at ${b}`,
    );
  if (second.length > 0 && b + second.length - 1 !== n) {
    throw new Error(`second receive ends at ${b + second.length - 1}, expected ${n}`);
  }
  if (second.length === 0 && a !== n)
    throw new Error(`lost lines ${a + 1}..${n}: the second receive printed nothing`);
  return { a, b };
}

/** When the first receive is interrupted. */
export type Moment =
  /** This long after the process started (it may still be starting, or already streaming). */
  | { afterSpawnMs: number }
  /** This long after its first output arrived (the reader keeps reading). */
  | { afterOutputMs: number }
  /**
   * Once this many bytes were read, the reader stops reading (the process blocks on a full pipe
   * with records in flight), and the signal comes `thenMs` later. Reading goes on after the signal,
   * as a terminal keeps showing what a process writes.
   */
  | { afterBytes: number; thenMs: number };

export const describeMoment = (moment: Moment): string =>
  'afterSpawnMs' in moment
    ? `${moment.afterSpawnMs} ms after it started`
    : 'afterOutputMs' in moment
      ? `${moment.afterOutputMs} ms after its first output`
      : `after ${moment.afterBytes} bytes with the reader stalled, ${moment.thenMs} ms later`;

/**
 * Runs the first receive, interrupts it at `moment` with `signal`, then the second receive; checks
 * that the two together printed 1..n with nothing missing, and that the first ended as the signal
 * says (130 after Ctrl-C, killed by SIGKILL; 0 if it had printed everything already).
 */
export async function interruptedThenAgain(
  s: Pick<Sandbox, 'env' | 'dir'>,
  argv: string[],
  signal: 'SIGKILL' | 'SIGINT',
  moment: Moment,
  n: number,
  again: () => Promise<string>,
): Promise<{ a: number; b: number }> {
  const proc: BinProcess = spawnBin(argv, { env: s.env, cwd: s.dir });
  if ('afterSpawnMs' in moment) {
    await sleep(moment.afterSpawnMs);
  } else if ('afterOutputMs' in moment) {
    await proc.stdoutReached(1);
    await sleep(moment.afterOutputMs);
  } else {
    await proc.stdoutReached(moment.afterBytes);
    proc.pauseStdout();
    await sleep(moment.thenMs);
  }
  proc.signal(signal);
  proc.child.stdout!.resume();
  const { code } = await proc.exited;
  const first = completeLines(proc.stdout());
  const second = completeLines(await again());
  const result = checkLossless(first, second, n);
  const complete = result.a === n;
  if (!complete) expect(code, proc.stderr()).toBe(signal === 'SIGINT' ? ExitCode.Interrupted : 128 + 9);
  else expect([0, signal === 'SIGINT' ? ExitCode.Interrupted : 128 + 9]).toContain(code);
  // Interrupted, never crashed: no stack trace, no error line.
  expect(proc.stderr()).not.toMatch(/\n\s+at |Error|ERR_/);
  return result;
}
