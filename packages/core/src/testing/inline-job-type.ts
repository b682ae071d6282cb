import { ErrorCode, toRjobError } from '../errors.js';
import { defineJobType, type JobType } from '../job/job-type.js';
import type { StreamName } from '../job/records.js';

/** What inline work receives. */
export interface InlineJobApi {
  /** Writes a record; returns false while the job is paused by flow control. */
  emit(stream: StreamName, data: unknown, sizeBytes?: number): boolean;
  /** Resolves when the job is not paused. */
  writable(): Promise<void>;
  /** Marks the job Running; called for you before `run` unless `deferRunning` is set. */
  running(): void;
  signal: AbortSignal;
}

export interface InlineJobDefinition {
  /** The work. Returning completes the job; throwing fails it with the error (coded ERR_JOB_THREW). */
  run(api: InlineJobApi): unknown | Promise<unknown>;
  /** Text for the Command column. Default `inline`. */
  command?: string;
  /** Leave the job NotStarted until the work calls `api.running()`. */
  deferRunning?: boolean;
}

/**
 * A job type that runs an async function in the calling thread. For unit tests of the job model
 * and for trying plugin ideas; it has no isolation, so never use it for untrusted work.
 */
export function inlineJobType(): JobType<InlineJobDefinition> {
  return defineJobType<InlineJobDefinition>({
    name: 'InlineJob',
    aliases: ['inline'],
    describe: (definition) => definition.command ?? 'inline',
    start(definition, context) {
      let paused = false;
      let wake: (() => void) | undefined;
      const api: InlineJobApi = {
        emit: (stream, data, size) => context.emit(stream, data, size) && !paused,
        writable: () => (paused ? new Promise<void>((resolve) => (wake = resolve)) : Promise.resolve()),
        running: () => context.running(),
        signal: context.signal,
      };
      if (!definition.deferRunning) context.running();
      Promise.resolve()
        .then(() => definition.run(api))
        .then(
          () => context.finish(context.signal.aborted ? { state: 'Stopped' } : { state: 'Completed' }),
          (error) =>
            context.finish(
              context.signal.aborted
                ? { state: 'Stopped' }
                : { state: 'Failed', reason: toRjobError(error, ErrorCode.JobThrew) },
            ),
        );
      return {
        stop() {
          // Inline work stops cooperatively through the signal; it cannot be forced.
          wake?.();
        },
        pause() {
          paused = true;
        },
        resume() {
          paused = false;
          wake?.();
          wake = undefined;
        },
      };
    },
  });
}
