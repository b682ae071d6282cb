import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import {
  CHILD_ENTRY_PATH,
  channelFromChild,
  ErrorCode,
  type JobContext,
  type JobOutcome,
  type JobRun,
  RjobError,
  toWorkSpec,
  WorkSession,
  type WorkSessionOptions,
  withFinish,
} from '@rjob/core';
import { pipeOutput, signalGroup } from './child-output.js';
import type { NodeChildDefinition, ProcessCommonOptions } from './definitions.js';
import type { GroupWatchdog } from './group-watchdog.js';
import { exitOutcome } from './supervise-child.js';

/** What the node-child mode borrows from the job type that owns it. */
export interface NodeChildDeps {
  watchdog: GroupWatchdog;
  maxLineChars: number;
  spawnOptions: (definition: ProcessCommonOptions, stdio: SpawnOptions['stdio']) => SpawnOptions;
  failedToStart: (child: ChildProcess, file: string) => Promise<never>;
  writeInput: (child: ChildProcess, input: string | Uint8Array) => void;
}

/**
 * Runs JS work in a node child: the shared runtime (`@rjob/core`'s child entry and
 * {@link WorkSession}) over IPC with `serialization: 'advanced'`, so records keep structured-clone
 * fidelity. The child is a process-group leader guarded by the watchdog like any other process
 * job; whatever it prints on stdout/stderr becomes output/error records too.
 */
export function startNodeChild(
  definition: NodeChildDefinition,
  context: JobContext,
  deps: NodeChildDeps,
): JobRun | Promise<JobRun> {
  // Before spawning: a bad definition or arguments that cannot be cloned fail with their own code.
  const spec = toWorkSpec(definition);
  const input = definition.input;
  const child = spawn(process.execPath, [...(definition.execArgv ?? []), CHILD_ENTRY_PATH], {
    ...deps.spawnOptions(definition, [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe', 'ipc']),
    serialization: 'advanced',
  });
  if (child.pid === undefined) return deps.failedToStart(child, process.execPath);
  const pgid = child.pid;
  deps.watchdog.register(pgid);
  child.on('error', () => {});
  if (input !== undefined) deps.writeInput(child, input);
  const output = pipeOutput(child, context, deps.maxLineChars);

  // The session finishes the job when the work reports `done`, but lines the work printed may
  // still sit in the stdout pipe then: hold its outcome until the child has closed its stdio.
  let outcome: JobOutcome | undefined;
  let closed = false;
  const held = withFinish(context, (result) => {
    outcome ??= result;
    if (closed) context.finish(outcome);
  });

  const channel = channelFromChild(child);
  let session: WorkSession;
  try {
    const options: WorkSessionOptions = {
      channel,
      context: held,
      spec,
      runId: 1,
      executor: 'node child process',
      kill: () => {
        signalGroup(pgid, 'SIGKILL');
        output.drain();
      },
    };
    if (definition.timeoutMs !== undefined) options.timeoutMs = definition.timeoutMs;
    if (definition.stopGraceMs !== undefined) options.stopGraceMs = definition.stopGraceMs;
    session = new WorkSession(options);
  } catch (error) {
    signalGroup(pgid, 'SIGKILL');
    deps.watchdog.unregister(pgid);
    throw error;
  }
  channel.on((message) => session.receive(message));

  // The child ends itself after `done`; anything it started in its group goes with it.
  child.on('exit', () => {
    signalGroup(pgid, 'SIGKILL');
    output.drain();
  });
  child.on('close', (code: number | null, signal: NodeJS.Signals | null) => {
    closed = true;
    deps.watchdog.unregister(pgid);
    if (outcome) context.finish(outcome);
    else session.lost(lostReason(code, signal));
  });

  return {
    stop: () => session.run.stop(),
    pause: () => {
      session.run.pause?.();
      output.pause();
    },
    resume: () => {
      session.run.resume?.();
      output.resume();
    },
  };
}

/** Why a node child that never reported `done` ended: its exit code, its signal, or a crash. */
function lostReason(code: number | null, signal: NodeJS.Signals | null): RjobError {
  const exit = exitOutcome(code, signal, 'Node child');
  if (exit.state === 'Failed') return exit.reason;
  return new RjobError(ErrorCode.JobCrashed, 'Node child exited with code 0 before its work finished');
}
