/**
 * Test sandboxes for the CLI: a private state directory (so the daemon a test starts is its own and
 * never the user's), captured streams, and a way to run the real bin. Disposing stops the agent and
 * deletes the directory.
 */
import { spawn } from 'node:child_process';
import { killDaemonsIn } from './daemon.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { run } from '../cli.js';
import type { CliIo } from '../io.js';

export const BIN = fileURLToPath(new URL('../../bin/rjob.cjs', import.meta.url));
const ENTRY = fileURLToPath(new URL('../cli-entry.ts', import.meta.url));
const TSX = import.meta.resolve('tsx');

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout as the bytes written (for `--bytes` output, which need not be UTF-8). */
  stdoutBytes: Buffer;
}

export interface Sandbox extends AsyncDisposable {
  dir: string;
  env: NodeJS.ProcessEnv;
  /** Runs a command in this process, as `rjob ARGV` would. */
  rjob(...argv: string[]): Promise<RunResult>;
  /**
   * {@link rjob} with stdout made to look like a terminal of `columns` characters (`isTTY` and
   * `columns` set), for output that adapts to one.
   */
  rjobOnTerminal(columns: number, ...argv: string[]): Promise<RunResult>;
  /**
   * Runs the real bin on a pseudo-terminal (util-linux `script`), typing `input`; the output is
   * everything the terminal showed.
   */
  pty(argv: string[], input: string): Promise<RunResult>;
  /** Runs the real bin in a child process. */
  bin(argv: string[], options?: { env?: NodeJS.ProcessEnv; input?: string }): Promise<RunResult>;
}

function capture(): { stream: PassThrough; text: () => string; bytes: () => Buffer } {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (chunk: Buffer) => chunks.push(chunk));
  return { stream, text: () => Buffer.concat(chunks).toString('utf8'), bytes: () => Buffer.concat(chunks) };
}

/** The bytes ride along unlisted, so tests comparing `{ code, stdout, stderr }` whole still can. */
function runResult(
  code: number,
  out: ReturnType<typeof capture>,
  err: ReturnType<typeof capture>,
): RunResult {
  const result = { code, stdout: out.text(), stderr: err.text() } as RunResult;
  Object.defineProperty(result, 'stdoutBytes', { value: out.bytes(), enumerable: false });
  return result;
}

export async function sandbox(extraEnv: NodeJS.ProcessEnv = {}): Promise<Sandbox> {
  // Short path: the agent's Unix socket lives inside and socket paths are limited to ~107 bytes.
  const dir = await mkdtemp(join(tmpdir(), 'rjob-cli-'));
  const env: NodeJS.ProcessEnv = { ...process.env, RJOB_STATE_DIR: dir, NO_COLOR: '1', ...extraEnv };
  delete env.FORCE_COLOR;
  const rjobWith = async (columns: number | undefined, argv: string[]): Promise<RunResult> => {
    const out = capture();
    const err = capture();
    if (columns !== undefined) Object.assign(out.stream, { isTTY: true, columns });
    const io: CliIo = {
      stdout: out.stream,
      stderr: err.stream,
      env,
      cwd: dir,
      // The daemon runs from source like the tests, so it needs tsx and the source condition.
      selfCommand: ['--conditions=@rjob/source', '--import', TSX, ENTRY],
    };
    const code = await run(argv, io);
    return runResult(code, out, err);
  };
  const rjob = (...argv: string[]): Promise<RunResult> => rjobWith(undefined, argv);
  const rjobOnTerminal = (columns: number, ...argv: string[]): Promise<RunResult> => rjobWith(columns, argv);
  const bin = (
    argv: string[],
    options: { env?: NodeJS.ProcessEnv; input?: string } = {},
  ): Promise<RunResult> =>
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [BIN, ...argv], {
        cwd: dir,
        env: { ...env, ...options.env },
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      const out = capture();
      const err = capture();
      child.stdout.pipe(out.stream);
      child.stderr.pipe(err.stream);
      child.stdin.end(options.input ?? '');
      child.on('error', reject);
      child.on('close', (code) => resolve(runResult(code ?? -1, out, err)));
    });
  const quote = (word: string): string => `'${word.replace(/'/g, `'\\''`)}'`;
  const pty = (argv: string[], input: string): Promise<RunResult> =>
    new Promise((resolve, reject) => {
      const command = [process.execPath, BIN, ...argv].map(quote).join(' ');
      const child = spawn('script', ['-qfec', command, '/dev/null'], { cwd: dir, env, stdio: 'pipe' });
      const out = capture();
      const err = capture();
      child.stdout.pipe(out.stream);
      child.stderr.pipe(err.stream);
      // Left open until the program exits: `script` may end the session when its input closes.
      child.stdin.write(input);
      child.on('error', reject);
      child.on('close', (code) => resolve(runResult(code ?? -1, out, err)));
    });
  return {
    dir,
    env,
    rjob,
    rjobOnTerminal,
    bin,
    pty,
    async [Symbol.asyncDispose]() {
      // Ends the daemon and every job in it before the directory goes.
      await rjob('agent', 'stop');
      // A daemon that a command of the test was still starting (no pid file yet when stop looked).
      killDaemonsIn(dir);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
