/**
 * The contract between the JobManager and a job type (ThreadJob, BackgroundJob, RemoteJob, or a
 * plugin's). A job type only starts work and reports what happens; the manager owns ids, names,
 * states, buffering, flow control and the verbs.
 */
import type { RjobError } from '../errors.js';
import type { StreamName } from './records.js';

/** How a job type reports the end of a job. */
export type JobOutcome =
  | { state: 'Completed' }
  | { state: 'Stopped' }
  | { state: 'Failed'; reason: RjobError };

/** What the manager hands a job type for each job it starts. */
export interface JobContext {
  readonly jobId: number;
  readonly instanceId: string;
  readonly name: string;
  /**
   * Aborted when someone asks the job to stop (or the manager closes). Types pass it on to the work
   * so that it can end cooperatively before being forced.
   */
  readonly signal: AbortSignal;
  /**
   * Marks the job Running and stamps its begin time. A type that queues work (a throttled pool)
   * calls it when the work really begins; until then the job stays NotStarted.
   */
  running(): void;
  /**
   * Appends a record to the job's buffer. `sizeBytes` is the record's weight for flow control
   * (the serialized size when the type knows it; an estimate is used otherwise).
   *
   * Returns false when the buffer is above its high-water mark; the manager has then called
   * {@link JobRun.pause} and will call {@link JobRun.resume} once a receiver drains it. Records
   * emitted while paused are still kept: pausing is a request, not a drop.
   */
  emit(stream: StreamName, data: unknown, sizeBytes?: number): boolean;
  /** Ends the job. Only the first call counts. */
  finish(outcome: JobOutcome): void;
  /**
   * Remote types: the link to where the job runs is lost, the work goes on there. A Running job
   * shows Disconnected until {@link reconnected}. Optional so that contexts built outside the
   * JobManager (tests, wrappers) need not provide it; the JobManager always does.
   */
  disconnected?(): void;
  /** Remote types: the link is back; a Disconnected job shows Running again. */
  reconnected?(): void;
}

/**
 * `context` with another `finish`: for a type that runs another type's work and must see (or hold
 * back) its outcome. Everything else goes to `context` as it is.
 */
export function withFinish(context: JobContext, finish: JobContext['finish']): JobContext {
  return {
    jobId: context.jobId,
    instanceId: context.instanceId,
    name: context.name,
    signal: context.signal,
    running: () => context.running(),
    emit: (stream, data, sizeBytes) => context.emit(stream, data, sizeBytes),
    finish,
    disconnected: () => context.disconnected?.(),
    reconnected: () => context.reconnected?.(),
  };
}

/** A started piece of work, as the manager sees it. */
export interface JobRun {
  /**
   * Asks the work to stop. Called once, after `context.signal` is aborted. The type ends the job
   * with `finish({ state: 'Stopped' })` when the work is gone (forcing it after a grace period).
   */
  stop(): void | Promise<void>;
  /** Stop producing records for now (flow control). Optional: a type without it is never paused. */
  pause?(): void;
  /** Producing may go on. */
  resume?(): void;
  /**
   * Suspends the work itself (a process job: SIGSTOP to its process group) until `continue`.
   * Optional: a type without it cannot be suspended. A stop must also end suspended work.
   */
  suspend?(): void;
  /** Lets suspended work go on (SIGCONT). */
  continue?(): void;
  /**
   * Writes to the work's input (a process job started with `stdinOpen`: its stdin pipe). Resolves
   * once the bytes were handed on; rejects ERR_STDIN_CLOSED when the input is closed. Optional: a
   * run without it takes no input.
   */
  write?(data: string | Uint8Array): Promise<void>;
  /** Closes the work's input: the work reads end of file. */
  endInput?(): void;
}

/** What a plugin author writes. */
export interface JobTypeInit<Definition> {
  /** The name shown in a job's `type`, e.g. `ThreadJob`. Also accepted by `JobManager.start`. */
  readonly name: string;
  /** Short names also accepted by `JobManager.start`, e.g. `thread`. */
  readonly aliases?: readonly string[];
  /** The text shown in the Command column for a definition. */
  describe(definition: Definition): string;
  /**
   * Starts the work. Throwing (or rejecting) fails the job with the error thrown, coded
   * ERR_JOB_START_FAILED unless it is already an RjobError.
   */
  start(definition: Definition, context: JobContext): JobRun | Promise<JobRun>;
  /** Releases what the type holds (pools, watchdogs). Called by `JobManager.close()`. */
  dispose?(): void | Promise<void>;
}

export type JobType<Definition = any> = JobTypeInit<Definition> & { readonly kind: 'rjob.job-type' };

/** Declares a job type. The identity function with a brand, so plugins need nothing else of ours. */
export function defineJobType<Definition>(init: JobTypeInit<Definition>): JobType<Definition> {
  return { ...init, kind: 'rjob.job-type' as const };
}
