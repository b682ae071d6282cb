/**
 * Nothing lost in everyday use (S8), with the real `rjob` bin against the agent daemon it starts:
 * big receives print every line; a receive killed (SIGKILL) or interrupted (Ctrl-C: SIGINT to its
 * process group) at any moment leaves every line it did not write for the next receive; `| head`
 * ends quietly and consumes only what went into the pipe. Also `rjob session receive NAME`.
 */
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from './io.js';
import { BIN, type Sandbox, sandbox } from './testing/sandbox.js';
import {
  checkLossless,
  completeLines,
  describeMoment,
  interruptedThenAgain,
  killAllBins,
  type Moment,
  spawnScript,
} from './testing/processes.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const execFileP = promisify(execFile);

describe('big receives print every line', { timeout: 120_000 }, () => {
  let s: Sandbox;
  beforeAll(async () => {
    s = await sandbox();
  });
  afterAll(async () => {
    await killAllBins();
    await s?.[Symbol.asyncDispose]();
  });

  for (const n of [300_000, 3_000_000]) {
    it(`a consuming receive of ${n.toLocaleString('en')} lines prints each once; a second prints nothing`, async () => {
      const name = `big${n}`;
      expect((await s.rjob('start', '--name', name, '--', `seq 1 ${n}`)).code).toBe(0);
      expect((await s.rjob('wait', name)).code).toBe(0);
      const received = await s.bin(['receive', name]);
      expect(received.code).toBe(0);
      expect(received.stderr).toBe('');
      const lines = completeLines(received.stdout);
      expect(lines.length).toBe(n);
      expect(lines[0]).toBe('1');
      expect(lines[n - 1]).toBe(String(n));
      // Every line, in order (one mismatch reported, not three million).
      const wrong = lines.findIndex((line, i) => line !== String(i + 1));
      expect(wrong).toBe(-1);
      expect(received.stdout.endsWith(`${n}\n`)).toBe(true);
      expect(await s.bin(['receive', name])).toEqual({ code: 0, stdout: '', stderr: '' });
      expect((await s.rjob('get', name)).stdout).toMatch(/Completed\s+False/);
    });
  }
});

const N = 250_000;
const MOMENTS: Moment[] = [
  { afterSpawnMs: 50 },
  { afterOutputMs: 300 },
  { afterOutputMs: 1000 },
  { afterBytes: 64 * 1024, thenMs: 100 },
];
/** Prints 1..n, pausing every 2000 lines: still printing while a `receive --wait` follows it. */
const slowSeq = (n: number): string =>
  `awk 'BEGIN { for (i = 1; i <= ${n}; i++) { print i; if (i % 2000 == 0) { fflush(); system("sleep 0.05") } } }'`;

// Independent jobs, so the cases run at once (each waits on processes, not on the CPU alone). The
// finished jobs are made first, one burst of starts and one wait, so the cases meet an agent that
// only streams.
describe.concurrent('an interrupted receive loses nothing', { timeout: 150_000 }, () => {
  const SIGNALS = ['SIGKILL', 'SIGINT'] as const;
  const SESSION_MOMENTS = [MOMENTS[2]!, MOMENTS[3]!];
  const jobName = (signal: string, m: number): string => `seq-${signal}-${m}`;
  const sessionName = (signal: string, m: number): string => `sr-${signal}-${m}`;
  let s: Sandbox;
  beforeAll(async () => {
    s = await sandbox();
    for (const signal of SIGNALS) {
      for (const [m] of MOMENTS.entries()) {
        const started = await s.rjob('start', '--name', jobName(signal, m), '--', `seq 1 ${N}`);
        expect(started.code, started.stderr).toBe(0);
      }
      for (const [m] of SESSION_MOMENTS.entries()) {
        const session = sessionName(signal, m);
        const created = await s.rjob('session', 'new', 'localhost', '--name', session);
        expect(created.code, created.stderr).toBe(0);
        const started = await s.rjob('start', '-s', session, '--name', 'out', '--', `seq 1 ${N}`);
        expect(started.code, started.stderr).toBe(0);
        const waited = await s.rjob('wait', '-s', session, 'out');
        expect(waited.code, waited.stderr).toBe(0);
      }
    }
    const waited = await s.rjob('wait', 'seq-*');
    expect(waited.code, waited.stderr).toBe(0);
  });
  afterAll(async () => {
    await killAllBins();
    await s?.[Symbol.asyncDispose]();
  });

  for (const signal of SIGNALS) {
    for (const [m, moment] of MOMENTS.entries()) {
      it(`rjob receive, ${signal} ${describeMoment(moment)}`, async () => {
        const name = jobName(signal, m);
        await interruptedThenAgain(s, ['receive', name], signal, moment, N, async () => {
          const again = await s.rjob('receive', name);
          expect(again.code, again.stderr).toBe(0);
          return again.stdout;
        });
        // Consumed exactly once over the two: nothing is left.
        expect((await s.rjob('receive', name)).stdout).toBe('');
      });
    }

    it(`rjob receive --wait of a job still printing, ${signal} while it follows`, async () => {
      const n = 60_000;
      const name = `follow-${signal}`;
      const started = await s.rjob('start', '--name', name, '--', slowSeq(n));
      expect(started.code, started.stderr).toBe(0);
      await interruptedThenAgain(
        s,
        ['receive', '--wait', name],
        signal,
        { afterOutputMs: 300 },
        n,
        async () => {
          const again = await s.rjob('receive', '--wait', name);
          expect(again.code, again.stderr).toBe(0);
          return again.stdout;
        },
      );
    });

    for (const [m, moment] of SESSION_MOMENTS.entries()) {
      it(`rjob session receive NAME, ${signal} ${describeMoment(moment)}`, async () => {
        const session = sessionName(signal, m);
        await interruptedThenAgain(s, ['session', 'receive', session], signal, moment, N, async () => {
          const again = await s.rjob('session', 'receive', session);
          expect(again.code, again.stderr).toBe(0);
          return again.stdout;
        });
        expect((await s.rjob('receive', '-s', session, 'out')).stdout).toBe('');
      });
    }
  }
});

describe('rjob receive into a pipe that closes', { timeout: 120_000 }, () => {
  let s: Sandbox;
  let dir: string;
  beforeAll(async () => {
    s = await sandbox();
    dir = await mkdtemp(join(tmpdir(), 'rjob-pipe-'));
  });
  afterAll(async () => {
    await killAllBins();
    await s?.[Symbol.asyncDispose]();
    await rm(dir, { recursive: true, force: true });
  });

  it('`rjob receive JOB | head -2` prints 2 lines, ends quietly (141), and leaves a contiguous rest', async () => {
    const n = 300_000;
    expect((await s.rjob('start', '--name', 'big', '--', `seq 1 ${n}`)).code).toBe(0);
    expect((await s.rjob('wait', 'big')).code).toBe(0);
    const errFile = join(dir, 'err');
    const codeFile = join(dir, 'code');
    const q = (word: string): string => `'${word.replace(/'/g, `'\\''`)}'`;
    const script = `{ ${q(process.execPath)} ${q(BIN)} receive big 2>${q(errFile)}; echo $? >${q(codeFile)}; } | head -2`;
    const { stdout } = await execFileP('sh', ['-c', script], { cwd: s.dir, env: s.env });
    expect(stdout).toBe('1\n2\n');
    expect((await readFile(codeFile, 'utf8')).trim()).toBe(String(ExitCode.BrokenPipe));
    expect(await readFile(errFile, 'utf8')).toBe('');
    const rest = completeLines((await s.rjob('receive', 'big')).stdout);
    expect(rest.length).toBeGreaterThan(0);
    const k = Number(rest[0]);
    expect(k).toBeGreaterThan(2);
    // The rest is k..n, contiguous: nothing after k is missing, and 1..k-1 went into the pipe.
    expect(
      checkLossless(
        Array.from({ length: k - 1 }, (_, i) => String(i + 1)),
        rest,
        n,
      ),
    ).toEqual({ a: k - 1, b: k });
  });

  it('a record is consumed only once its bytes were in the pipe: a reader that closes sees 1..k-1 at least', async () => {
    // A FIFO the test reads: after 512 KiB the writer is stopped (SIGSTOP, so nothing is written
    // between the last read and the close), every byte in the pipe is read, the pipe is closed,
    // and the writer goes on, into a pipe without a reader.
    const n = 300_000;
    expect((await s.rjob('start', '--name', 'fifo', '--', `seq 1 ${n}`)).code).toBe(0);
    expect((await s.rjob('wait', 'fifo')).code).toBe(0);
    const fifo = join(dir, 'fifo');
    await execFileP('mkfifo', [fifo]);
    const q = (word: string): string => `'${word.replace(/'/g, `'\\''`)}'`;
    // `exec`: the shell becomes the bin, so the process group is the bin and its CLI process.
    const proc = spawnScript(`exec ${q(process.execPath)} ${q(BIN)} receive fifo >${q(fifo)}`, {
      env: s.env,
      cwd: s.dir,
    });
    const reader = await open(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const seen: Buffer[] = [];
    const readAvailable = async (): Promise<boolean> => {
      const buffer = Buffer.alloc(65536);
      for (;;) {
        try {
          const { bytesRead } = await reader.read(buffer, 0, buffer.length, null);
          if (bytesRead === 0) return false;
          seen.push(Buffer.from(buffer.subarray(0, bytesRead)));
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === 'EAGAIN') return true;
          throw error;
        }
      }
    };
    try {
      // Until more than one write of the CLI's can hold (RecordWriter writes at most ~256 KiB at a
      // time, a pipe holds 64 KiB): at least one write then went out whole and was acknowledged,
      // however many records the first one carried on a loaded machine.
      while (seen.reduce((bytes, chunk) => bytes + chunk.length, 0) < 512 * 1024) {
        await readAvailable();
        await sleep(5);
      }
      proc.signal('SIGSTOP');
      // Stopped: what is in the pipe now is all it will hold until the close.
      await sleep(200);
      await readAvailable();
    } finally {
      await reader.close();
      proc.signal('SIGCONT');
    }
    const { code } = await proc.exited;
    expect(code).toBe(ExitCode.BrokenPipe);
    expect(proc.stderr()).toBe('');
    const written = completeLines(Buffer.concat(seen).toString());
    const rest = completeLines((await s.rjob('receive', 'fifo')).stdout);
    const { a, b } = checkLossless(written, rest, n);
    // Everything consumed was read out of the pipe (b - 1 <= a): nothing went only to a closed pipe.
    expect(b - 1).toBeLessThanOrEqual(a);
    expect(b).toBeGreaterThan(1);
  });
});
