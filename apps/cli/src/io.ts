/**
 * What every command gets instead of touching `process` directly, so tests can run commands
 * in-process with their own streams, environment and directory.
 */
import type { Session } from '@rjob/core';
import { CliErrorCode } from './error-codes.js';

export interface CliIo {
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
  stdin?: NodeJS.ReadableStream & { isTTY?: boolean };
  env: NodeJS.ProcessEnv;
  cwd: string;
  /**
   * How to run this CLI again (node options and entry script after `process.execPath`), used to
   * start the agent daemon as `<self> agent daemon`. Default: this process's own execArgv and script.
   */
  selfCommand?: string[];
  /**
   * Set by `rjob enter`: the session job verbs run in when no `-s` is given, instead of the local
   * jobs' session. It belongs to `enter`, which disconnects or closes it.
   */
  session?: Session<unknown>;
}

/** Documented in docs/cli.md; scripts branch on these. */
export const ExitCode = {
  Ok: 0,
  /** A job (or a host's command) failed. */
  JobFailed: 1,
  /** Bad flag, missing argument, unknown verb. */
  Usage: 2,
  /** No such job or session. */
  NotFound: 3,
  /** A host or agent could not be reached: refused, unresolvable, refused host key, failed login. */
  Unreachable: 4,
  /** `wait --timeout` ran out before the jobs finished. */
  Timeout: 5,
  /**
   * The job is in a state the verb refuses (remove of a running job without --force), or another
   * agent already serves the state directory (ERR_AGENT_RUNNING).
   */
  Refused: 6,
  /** The disk holding the state directory is full (ERR_DISK_FULL). */
  DiskFull: 7,
  /** Anything else: a bug or an agent-side failure. */
  Internal: 10,
  /** Ctrl-C (SIGINT) or SIGTERM stopped the command, as a shell reports a process it ended. */
  Interrupted: 130,
  /** The reader of stdout went away (`| head`): quiet, as a Unix tool that got SIGPIPE. */
  BrokenPipe: 141,
} as const;

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** An error a command raises on purpose: one line for the user, a code for scripts. */
export class CliError extends Error {
  readonly exitCode: ExitCodeValue;
  readonly code: string;

  constructor(exitCode: ExitCodeValue, code: string, message: string) {
    super(message);
    this.name = 'CliError';
    this.exitCode = exitCode;
    this.code = code;
  }
}

export function usageError(message: string): CliError {
  return new CliError(ExitCode.Usage, CliErrorCode.Usage, message);
}

export function defaultIo(): CliIo {
  return {
    stdout: process.stdout,
    // Made on first use: node builds each stdio stream when first asked for it (stdin as a file
    // or socket reader), and most commands never read stdin nor write to stderr.
    get stderr() {
      return process.stderr;
    },
    get stdin() {
      return process.stdin;
    },
    env: process.env,
    cwd: process.cwd(),
  };
}

/** NO_COLOR (https://no-color.org) wins; otherwise colour only on a terminal. */
export function useColor(io: CliIo, stream: CliIo['stdout']): boolean {
  if (io.env.NO_COLOR !== undefined && io.env.NO_COLOR !== '') return false;
  if (io.env.FORCE_COLOR !== undefined && io.env.FORCE_COLOR !== '0') return true;
  return stream.isTTY === true && io.env.TERM !== 'dumb';
}
