import type { WorkDefinition } from '@rjob/core';

/** What every BackgroundJob definition may carry. */
export interface ProcessCommonOptions {
  /** Working directory of the child. Default: the owner's `process.cwd()`. */
  cwd?: string;
  /**
   * Variables merged over `process.env` (or used alone with `replaceEnv`); a key set to
   * `undefined` is removed. Default: the owner's environment as is.
   */
  env?: Record<string, string | undefined>;
  /** Use `env` as the whole environment instead of merging it over `process.env`. Default false. */
  replaceEnv?: boolean;
  /** Written to the child's stdin, which is then closed. Default: stdin is not connected. */
  input?: string | Uint8Array;
  /**
   * Time between asking the job to stop and SIGKILL to its process group. A command gets SIGTERM
   * first; JS work gets its `ctx.signal` aborted. Default 2000.
   */
  stopGraceMs?: number;
  /**
   * Fail the job with ERR_JOB_TIMEOUT (`timedOut: true`) once it has run this long, ending it as a
   * stop does. Default: no limit.
   */
  timeoutMs?: number;
}

/** What commands run natively (a shell command line or an executable) may also carry. */
export interface NativeProcessOptions {
  /**
   * How stdout becomes records. `lines` (default): decoded as UTF-8 and split into one string
   * record per line. `bytes`: every chunk read from the pipe becomes one Buffer record, exactly as
   * the child wrote it, for binary output (an archive, an image) and for bulk copies, where a
   * record per line would cost more than the bytes. stderr is always lines.
   */
  stdout?: 'lines' | 'bytes';
  /**
   * Keep the child's stdin open as a pipe that the job's owner writes to (`JobRun.write`, the
   * agent's `job.send`, `rjob send`) until it closes it (`JobRun.endInput`) or the job ends. With
   * `input`, that is written first and the pipe stays open. Default false: stdin is not connected
   * (the child reads end of file at once), so a job nobody writes to never waits for input.
   */
  stdinOpen?: boolean;
}

/** A command line run by a shell: `shell -c command`. */
export interface ShellCommandDefinition extends ProcessCommonOptions, NativeProcessOptions {
  command: string;
  /** Default `/bin/sh`. */
  shell?: string;
}

/** An executable run with an argument vector, no shell involved. */
export interface FileDefinition extends ProcessCommonOptions, NativeProcessOptions {
  file: string;
  args?: readonly string[];
}

export interface NodeChildOptions {
  /**
   * Node options for the child, e.g. `['--import', 'tsx']` to run a TypeScript module.
   * Default: none (the owner's own `execArgv` is not passed on).
   */
  execArgv?: readonly string[];
}

/**
 * JS work run in a node child (`process.execPath`), through the runtime ThreadJob uses too:
 * `{ fn, args }` (only the function's source crosses, not its closure), `{ module, export, args }`
 * (a relative path resolves against the owner's current directory) or `{ eval, args }` (the body
 * of an async generator with `ctx` and `args` in scope). See `WorkDefinition` in @rjob/core.
 */
export type NodeChildDefinition = WorkDefinition & ProcessCommonOptions & NodeChildOptions;

/** Every definition {@link processJobType} accepts. */
export type ProcessJobDefinition = ShellCommandDefinition | FileDefinition | NodeChildDefinition;
