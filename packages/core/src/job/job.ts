import type { RjobError } from '../errors.js';
import { RecordBuffer } from './record-buffer.js';
import { assertTransition, isTerminal, type JobState } from './states.js';

export interface JobStateChange {
  job: Job;
  previous: JobState;
  state: JobState;
  reason?: RjobError;
}

/** Who a job is, as Get-Job's columns show it: the fields every shape of a job shares. */
export interface JobColumns {
  id: number;
  instanceId: string;
  name: string;
  /** The job type's name: ThreadJob, BackgroundJob, RemoteJob, or a plugin's. */
  type: string;
  /** What the job runs. */
  command: string;
  /** Where it runs: `localhost`, or the computer names of a remote job. */
  location: string;
}

export interface JobInit extends JobColumns {
  parent?: Job;
  /** A restored job's times (JobManager.restore); otherwise set as it runs and ends. */
  beginTime?: Date;
  endTime?: Date;
}

/**
 * A job as users see it: identity, state, times and children. The JobManager changes it; users
 * read it and listen to it.
 */
export class Job {
  readonly id: number;
  readonly instanceId: string;
  readonly name: string;
  /** The job type's name: ThreadJob, BackgroundJob, RemoteJob, or a plugin's. */
  readonly type: string;
  /** The Command column: what the job runs. */
  readonly command: string;
  /** Where it runs: `localhost`, or the computer names of a remote job. */
  readonly location: string;
  readonly parent: Job | undefined;
  readonly children: Job[] = [];

  #state: JobState = 'NotStarted';
  #reason: RjobError | undefined;
  #beginTime: Date | undefined;
  #endTime: Date | undefined;
  #listeners = new Set<(change: JobStateChange) => void>();
  #changeWaiters: Array<() => void> = [];

  /** @internal Undelivered records. Parents hold none of their own. */
  readonly buffer = new RecordBuffer();
  /** @internal Next record sequence number. */
  nextSeq = 1;
  /** @internal Set once someone asked this job to stop. */
  stopRequested = false;

  constructor(init: JobInit) {
    this.id = init.id;
    this.instanceId = init.instanceId;
    this.name = init.name;
    this.type = init.type;
    this.command = init.command;
    this.location = init.location;
    this.parent = init.parent;
    this.#beginTime = init.beginTime;
    this.#endTime = init.endTime;
  }

  get state(): JobState {
    return this.#state;
  }

  /** Why a Failed job failed (also set on a parent whose child failed). */
  get reason(): RjobError | undefined {
    return this.#reason;
  }

  /** When the job started running; stamped once. */
  get beginTime(): Date | undefined {
    return this.#beginTime;
  }

  /** When the job reached a terminal state; stamped once. */
  get endTime(): Date | undefined {
    return this.#endTime;
  }

  get finished(): boolean {
    return isTerminal(this.#state);
  }

  /** True while records are undelivered or the job can still produce some. */
  get hasMoreData(): boolean {
    if (this.children.length > 0) return this.children.some((child) => child.hasMoreData);
    return this.buffer.length > 0 || !this.finished;
  }

  /** Listens for state changes; returns a function that stops listening. */
  onStateChange(listener: (change: JobStateChange) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** @internal Moves the job to a new state, enforcing the legal transitions. */
  setState(state: JobState, reason?: RjobError): void {
    const previous = this.#state;
    if (previous === state) return;
    assertTransition(previous, state);
    this.#state = state;
    if (state === 'Running' && !this.#beginTime) this.#beginTime = new Date();
    if (isTerminal(state)) {
      this.#endTime ??= new Date();
      // A Stopped job keeps a reason only when its stop could not be carried out everywhere (a
      // remote job whose session could not be reached).
      if (state === 'Failed' || state === 'Stopped') this.#reason = reason;
    }
    const change: JobStateChange = { job: this, previous, state };
    if (this.#reason) change.reason = this.#reason;
    for (const listener of [...this.#listeners]) {
      try {
        listener(change);
      } catch {
        // A listener's bug must not wedge the job model.
      }
    }
    this.notify();
  }

  /** @internal Resolves on the next record or state change. */
  changed(): Promise<void> {
    return new Promise((resolve) => this.#changeWaiters.push(resolve));
  }

  /** @internal Wakes everything waiting in {@link changed}, here and up the parent chain. */
  notify(): void {
    const waiters = this.#changeWaiters;
    this.#changeWaiters = [];
    for (const wake of waiters) wake();
    this.parent?.notify();
  }

  toJSON(): Record<string, unknown> {
    return {
      id: this.id,
      instanceId: this.instanceId,
      name: this.name,
      type: this.type,
      state: this.#state,
      hasMoreData: this.hasMoreData,
      location: this.location,
      command: this.command,
      beginTime: this.#beginTime?.toISOString() ?? null,
      endTime: this.#endTime?.toISOString() ?? null,
      reason: this.#reason ? { code: this.#reason.code, message: this.#reason.message } : null,
      childIds: this.children.map((child) => child.id),
    };
  }
}
