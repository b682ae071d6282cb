import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import {
  DEFAULT_STOP_GRACE_MS,
  defineJobType,
  describeWork,
  ErrorCode,
  type JobContext,
  type JobRun,
  type JobType,
  RjobError,
} from '@rjob/core';
import type { NativeProcessOptions, ProcessCommonOptions, ProcessJobDefinition } from './definitions.js';
import { GroupWatchdog } from './group-watchdog.js';
import { DEFAULT_MAX_LINE_CHARS } from './line-splitter.js';
import { startNodeChild } from './node-child.js';
import { superviseChild } from './supervise-child.js';

export interface ProcessJobTypeOptions {
  /**
   * When the owning process dies, the watchdog sends SIGTERM to every job's process group, waits
   * up to this long for them to go, then sends SIGKILL. Default 2000.
   */
  orphanGraceMs?: number;
  /**
   * Longest output or error record, in UTF-16 code units. A longer line arrives as several
   * records of this length, in order, so one endless line cannot exhaust memory. Default 1 MiB
   * (1,048,576).
   */
  maxLineChars?: number;
}

/** Shown in the Type column of BackgroundJob jobs. */
export const PROCESS_JOB_TYPE_NAME = 'BackgroundJob';

/**
 * BackgroundJob: runs a shell command, an executable, or JavaScript (a function, a module export
 * or source text) in a child process. Each child leads its own process group; stop ends the whole
 * group (SIGTERM, then SIGKILL after `stopGraceMs`), and a watchdog ends every group when the
 * owner dies, even by SIGKILL.
 */
export function processJobType(options: ProcessJobTypeOptions = {}): JobType<ProcessJobDefinition> {
  const watchdog = new GroupWatchdog(options.orphanGraceMs ?? 2000);
  const maxLineChars = options.maxLineChars ?? DEFAULT_MAX_LINE_CHARS;

  return defineJobType<ProcessJobDefinition>({
    name: PROCESS_JOB_TYPE_NAME,
    aliases: ['process'],
    describe,
    start(definition, context): JobRun | Promise<JobRun> {
      if (definition === null || typeof definition !== 'object') throw invalid(definition);
      const stdoutMode = (definition as NativeProcessOptions).stdout;
      if (stdoutMode !== undefined && stdoutMode !== 'lines' && stdoutMode !== 'bytes') {
        throw new RjobError(
          ErrorCode.InvalidArgument,
          `stdout must be 'lines' or 'bytes', not ${String(stdoutMode)}.`,
          {
            details: { stdout: String(stdoutMode) },
          },
        );
      }
      if ('command' in definition) {
        if (typeof definition.command !== 'string') throw invalid(definition);
        return startNative(definition.shell ?? '/bin/sh', ['-c', definition.command], definition, context);
      }
      if ('file' in definition) {
        if (typeof definition.file !== 'string') throw invalid(definition);
        return startNative(definition.file, definition.args ?? [], definition, context);
      }
      if ('fn' in definition || 'module' in definition || 'eval' in definition) {
        return startNodeChild(definition, context, {
          watchdog,
          maxLineChars,
          spawnOptions,
          failedToStart,
          writeInput,
        });
      }
      throw invalid(definition);
    },
    dispose: () => watchdog.dispose(),
  });

  function startNative(
    file: string,
    args: readonly string[],
    definition: ProcessCommonOptions & NativeProcessOptions,
    context: JobContext,
  ): JobRun | Promise<JobRun> {
    const input = definition.input;
    const stdinOpen = definition.stdinOpen === true;
    const stdio: Array<'ignore' | 'pipe'> = [
      input === undefined && !stdinOpen ? 'ignore' : 'pipe',
      'pipe',
      'pipe',
    ];
    const child = spawn(file, args, spawnOptions(definition, stdio));
    if (child.pid === undefined) return failedToStart(child, file);
    watchdog.register(child.pid);
    // Late errors (a failed kill) are no reason to crash the owner; the exit tells what happened.
    child.on('error', () => {});
    if (stdinOpen) child.stdin!.on('error', () => {});
    if (input !== undefined) {
      if (stdinOpen) child.stdin!.write(input);
      else writeInput(child, input);
    }
    context.running();
    return superviseChild(child, context, watchdog, {
      ...(stdinOpen ? { stdin: child.stdin! } : {}),
      stopGraceMs: definition.stopGraceMs ?? DEFAULT_STOP_GRACE_MS,
      timeoutMs: definition.timeoutMs,
      maxLineChars,
      stdoutBytes: definition.stdout === 'bytes',
    });
  }
}

/** Spawn options shared by every mode: own process group, cwd, environment. */
function spawnOptions(definition: ProcessCommonOptions, stdio: SpawnOptions['stdio']): SpawnOptions {
  const options: SpawnOptions = { detached: true, stdio };
  if (definition.cwd !== undefined) options.cwd = definition.cwd;
  if (definition.replaceEnv) options.env = { ...definition.env };
  else if (definition.env !== undefined) options.env = { ...process.env, ...definition.env };
  return options;
}

/** Node reports a failed spawn (ENOENT, EACCES, a bad cwd) as an `error` event after `spawn()`. */
function failedToStart(child: ChildProcess, file: string): Promise<never> {
  return new Promise((_, reject) => {
    child.once('error', (error: NodeJS.ErrnoException) => {
      reject(
        new RjobError(ErrorCode.JobStartFailed, `Could not start ${file}: ${error.message}`, {
          cause: error,
          details: { file, ...(error.code ? { errno: error.code } : {}) },
        }),
      );
    });
  });
}

function writeInput(child: ChildProcess, input: string | Uint8Array): void {
  const stdin = child.stdin!;
  // EPIPE when the child exits without reading its input; that is the child's business.
  stdin.on('error', () => {});
  stdin.end(input);
}

function invalid(definition: unknown): RjobError {
  return new RjobError(
    ErrorCode.InvalidArgument,
    'A BackgroundJob definition needs one of: command (string), file (string), fn, module or eval.',
    {
      details: {
        definition: typeof definition === 'object' ? Object.keys(definition ?? {}) : typeof definition,
      },
    },
  );
}

function describe(definition: ProcessJobDefinition): string {
  if ('command' in definition) return definition.command;
  if ('file' in definition) return [definition.file, ...(definition.args ?? [])].map(quote).join(' ');
  return describeWork(definition);
}

// Quotes an argument for display the way a POSIX shell would need it.
function quote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}
