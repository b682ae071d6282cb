import type { ChildProcess } from 'node:child_process';
import type { Writable } from 'node:stream';
import { ErrorCode, type JobContext, type JobOutcome, type JobRun, RjobError } from '@rjob/core';
import { pipeOutput, signalGroup } from './child-output.js';
import type { GroupWatchdog } from './group-watchdog.js';

export interface SuperviseOptions {
  stopGraceMs: number;
  timeoutMs: number | undefined;
  maxLineChars: number;
  /** stdout as Buffer chunks, not lines (a definition's `stdout: 'bytes'`). */
  stdoutBytes?: boolean;
  /** The child's stdin, kept open for the owner to write to (a definition's `stdinOpen`). */
  stdin?: Writable;
}

/**
 * Runs one spawned command as a job: output lines become records, the exit status becomes the
 * outcome, stop and timeout end the whole process group (SIGTERM, then SIGKILL after the grace),
 * and pause/resume stop reading the pipes so the child blocks instead of the owner buffering.
 *
 * The child must have been spawned with `detached: true` (its pid is its process group id) and
 * already registered with the watchdog.
 */
export function superviseChild(
  child: ChildProcess,
  context: JobContext,
  watchdog: GroupWatchdog,
  options: SuperviseOptions,
): JobRun {
  const pgid = child.pid!;
  const output = pipeOutput(child, context, options.maxLineChars, options.stdoutBytes === true);
  let stopping = false;
  let timedOut = false;
  let killTimer: NodeJS.Timeout | undefined;
  let timeoutTimer: NodeJS.Timeout | undefined;

  const end = () => {
    if (stopping) return;
    stopping = true;
    signalGroup(pgid, 'SIGTERM');
    // A suspended group takes SIGTERM only once it runs again.
    signalGroup(pgid, 'SIGCONT');
    killTimer = setTimeout(() => {
      signalGroup(pgid, 'SIGKILL');
      output.drain();
    }, options.stopGraceMs);
  };

  if (options.timeoutMs !== undefined) {
    timeoutTimer = setTimeout(() => {
      timedOut = true;
      end();
    }, options.timeoutMs);
  }

  child.on('exit', () => {
    if (stopping) output.drain();
  });

  // 'close' comes after the exit and after both pipes ended, so every line is in by now. Like a
  // shell's `$(...)`, a background process still holding stdout keeps the job running.
  child.on('close', (code: number | null, signal: NodeJS.Signals | null) => {
    if (killTimer) clearTimeout(killTimer);
    if (timeoutTimer) clearTimeout(timeoutTimer);
    // The job's process group does not outlive the job: whatever the leader left behind (a
    // background `cmd &` that closed its stdio) is killed here, while the watchdog still guards
    // the group, and only then is the group forgotten.
    signalGroup(pgid, 'SIGKILL');
    watchdog.unregister(pgid);
    context.finish(
      timedOut
        ? timeoutOutcome(options.timeoutMs!)
        : stopping
          ? { state: 'Stopped' }
          : exitOutcome(code, signal),
    );
  });

  return {
    stop: end,
    pause: output.pause,
    resume: output.resume,
    suspend: () => signalGroup(pgid, 'SIGSTOP'),
    continue: () => signalGroup(pgid, 'SIGCONT'),
    ...(options.stdin ? openInput(options.stdin, pgid) : {}),
  };
}

/** `write` and `endInput` over a child's stdin pipe (see ProcessCommonOptions.stdinOpen). */
function openInput(stdin: Writable, pgid: number): Pick<JobRun, 'write' | 'endInput'> {
  const closed = (): RjobError =>
    new RjobError(ErrorCode.StdinClosed, `The stdin of process ${pgid} is closed.`, {
      details: { pid: pgid },
    });
  return {
    write: (data) =>
      new Promise<void>((resolve, reject) => {
        if (stdin.writableEnded || stdin.destroyed) return reject(closed());
        // Resolves once the bytes are in the pipe (or queued behind it): a writer awaiting each
        // write goes no faster than the child reads.
        stdin.write(data, (error) => (error ? reject(closed()) : resolve()));
      }),
    endInput: () => {
      if (!stdin.writableEnded) stdin.end();
    },
  };
}

/** Completed for exit code 0, otherwise Failed with the code or the signal in the reason. */
export function exitOutcome(
  code: number | null,
  signal: NodeJS.Signals | null,
  label = 'Process',
): JobOutcome {
  if (code === 0) return { state: 'Completed' };
  if (code !== null) {
    return {
      state: 'Failed',
      reason: new RjobError(ErrorCode.JobExitCode, `${label} exited with code ${code}`, { exitCode: code }),
    };
  }
  return {
    state: 'Failed',
    reason: new RjobError(ErrorCode.JobSignal, `${label} was killed by signal ${signal}`, {
      signal: signal ?? 'unknown',
    }),
  };
}

function timeoutOutcome(timeoutMs: number): JobOutcome {
  return {
    state: 'Failed',
    reason: new RjobError(
      ErrorCode.JobTimeout,
      `Process ran past its timeout of ${timeoutMs} ms and was stopped`,
      {
        timedOut: true,
        details: { timeoutMs },
      },
    ),
  };
}
