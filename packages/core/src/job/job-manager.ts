import { randomUUID } from '../util/lazy-builtins.js';
import { ErrorCode, RjobError, toRjobError } from '../errors.js';
import { Job } from './job.js';
import type {
  GetFilter,
  JobManagerOptions,
  JobSelector,
  ReceiveOptions,
  ReceiveStreamOptions,
  RemoveOptions,
  RestoredIdentity,
  RestoreGroupOptions,
  RestoreOptions,
  StartGroupOptions,
  StartOptions,
  WaitOptions,
} from './job-manager-options.js';
import { deriveParentState, launchThrottled, waitFor } from './job-progress.js';
import { batchRecords, leavesOf, reasonRecord, streamRecords } from './job-records.js';
import { reserveIds, restoredTimes } from './job-restore.js';
import { filterJobs, selectJobs } from './job-selection.js';
import type { JobContext, JobOutcome, JobRun, JobType } from './job-type.js';
import { estimateSize } from './record-buffer.js';
import type { JobRecord, StreamName } from './records.js';
import type { JobState } from './states.js';

// @rjob/core's index exports the verbs' option types and the record helpers from here.
export type * from './job-manager-options.js';
export { leavesOf, reasonRecord } from './job-records.js';

const DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024;
const DEFAULT_THROTTLE_LIMIT = 32;

interface Leaf {
  job: Job;
  type?: JobType;
  run?: JobRun;
  context?: JobContext & { abort(): void };
  paused: boolean;
  launch?: () => void;
}

/**
 * Owns jobs: their ids, names, states, buffered records and the verbs (start, get, receive,
 * wait, stop, remove). Job types only run work.
 */
export class JobManager {
  readonly #types = new Map<string, JobType>();
  readonly #jobs = new Map<number, Job>();
  readonly #leaves = new Map<Job, Leaf>();
  readonly #maxBufferedBytes: number;
  readonly #location: string;
  #nextId = 1;
  #closed = false;

  constructor(options: JobManagerOptions = {}) {
    this.#maxBufferedBytes = options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES;
    this.#location = options.location ?? 'localhost';
    for (const type of options.types ?? []) this.register(type);
  }

  /** Makes a job type startable by its name and aliases. */
  register(type: JobType): this {
    for (const key of [type.name, ...(type.aliases ?? [])]) this.#types.set(key.toLowerCase(), type);
    return this;
  }

  /** The registered job types, once each. */
  get types(): JobType[] {
    return [...new Set(this.#types.values())];
  }

  /** Starts a job. Resolves once the job type accepted it (a queued job is still NotStarted). */
  async start<Definition>(
    type: string | JobType<Definition>,
    definition: Definition,
    options: StartOptions = {},
  ): Promise<Job> {
    this.#assertOpen();
    const jobType = this.#resolveType(type);
    const job = this.#createJob(jobType, definition, options, undefined);
    await this.#launch(job, jobType, definition);
    return job;
  }

  /**
   * Starts a job under the id and instance id it had before (an agent putting its jobs back after
   * a restart, in id order). Ids are never reused: `id` must be above every id handed out so far,
   * and later jobs get the ids after it. Throws ERR_INVALID_ARGUMENT otherwise.
   */
  async restore<Definition>(
    type: string | JobType<Definition>,
    definition: Definition,
    options: RestoreOptions,
  ): Promise<Job> {
    this.#assertOpen();
    const jobType = this.#resolveType(type);
    this.#nextId = reserveIds(this.#nextId, [options]);
    const job = this.#createJob(jobType, definition, options, undefined, undefined, options);
    await this.#launch(job, jobType, definition);
    return job;
  }

  /** {@link startGroup} for a parent and children put back under their ids, as {@link restore}. */
  restoreGroup(options: RestoreGroupOptions): Job {
    if (options.childIdentities.length !== options.children.length) {
      throw new RjobError(ErrorCode.InvalidArgument, 'Each restored child needs its identity.');
    }
    this.#nextId = reserveIds(this.#nextId, [options, ...options.childIdentities]);
    return this.#group(options, options);
  }

  /**
   * Starts a parent job with one child per spec (a fan-out). At most `throttleLimit` children run
   * at once. The parent's state follows its children's.
   */
  startGroup(options: StartGroupOptions): Job {
    return this.#group(options);
  }

  #group(options: StartGroupOptions, restored?: RestoreGroupOptions): Job {
    this.#assertOpen();
    if (options.children.length === 0) {
      throw new RjobError(ErrorCode.InvalidArgument, 'A parent job needs at least one child.');
    }
    const specs = options.children.map((spec) => ({ spec, type: this.#resolveType(spec.type) }));
    const id = restored?.id ?? this.#nextId++;
    const parent = new Job({
      ...restoredTimes(restored),
      id,
      instanceId: restored?.instanceId ?? randomUUID(),
      name: options.name ?? `Job${id}`,
      type: options.type ?? specs[0]!.type.name,
      command: options.command ?? specs[0]!.type.describe(specs[0]!.spec.definition),
      location: options.location ?? options.children.map((c) => c.location ?? this.#location).join(','),
    });
    this.#jobs.set(parent.id, parent);

    const launches = new Map<Job, () => void>();
    for (const [index, { spec, type }] of specs.entries()) {
      const identity = restored?.childIdentities[index];
      const childOptions: StartOptions = {};
      if (spec.name !== undefined) childOptions.name = spec.name;
      if (spec.location !== undefined) childOptions.location = spec.location;
      if (spec.command !== undefined) childOptions.command = spec.command;
      const child = this.#createJob(type, spec.definition, childOptions, parent, spec.typeName, identity);
      parent.children.push(child);
      launches.set(child, () => void this.#launch(child, type, spec.definition));
    }
    const limit = Math.max(1, options.throttleLimit ?? DEFAULT_THROTTLE_LIMIT);
    launchThrottled(parent, limit, (child) => launches.get(child)!());
    return parent;
  }

  /** Lists jobs, newest last. */
  get(filter: GetFilter = {}): Job[] {
    return filterJobs(this.#jobs, filter, (type) => this.#typeName(type));
  }

  /** One job by id, name or instance id; throws ERR_JOB_NOT_FOUND. */
  job(selector: number | string | Job): Job {
    return selectJobs(this.#jobs, selector)[0]!;
  }

  /**
   * Returns (and, unless `keep`, consumes) the records of the selected jobs; a parent gives its
   * children's. A Failed job's reason is appended as an error record on every call.
   */
  async receive(selector: JobSelector, options: ReceiveOptions = {}): Promise<JobRecord[]> {
    if (options.autoRemove && !options.wait) {
      throw new RjobError(ErrorCode.InvalidArgument, 'autoRemove needs wait: true.');
    }
    const jobs = selectJobs(this.#jobs, selector);
    if (options.wait) {
      const out: JobRecord[] = [];
      const streamOptions: ReceiveStreamOptions = {};
      if (options.keep !== undefined) streamOptions.keep = options.keep;
      if (options.autoRemove !== undefined) streamOptions.autoRemove = options.autoRemove;
      for await (const record of this.receiveStream(jobs, streamOptions)) out.push(record);
      return out;
    }
    const out: JobRecord[] = [];
    for (const leaf of leavesOf(jobs)) {
      const records = options.keep ? leaf.buffer.peekAll() : leaf.buffer.takeAll();
      out.push(...records);
      if (!options.keep) this.#drained(leaf);
      if (leaf.state === 'Failed') out.push(reasonRecord(leaf));
    }
    return out;
  }

  /**
   * Streams the records of the selected jobs as they are written, until every one has finished
   * and everything was delivered. Consumes what it yields unless `keep`.
   */
  async *receiveStream(selector: JobSelector, options: ReceiveStreamOptions = {}): AsyncGenerator<JobRecord> {
    const jobs = selectJobs(this.#jobs, selector);
    yield* streamRecords(leavesOf(jobs), options.keep, (leaf) => this.#drained(leaf));
    if (options.autoRemove) await this.remove(jobs);
  }

  /**
   * {@link receiveStream} in arrays: each holds every record of one job that was there to take at
   * once (never empty), consumed as it is yielded. For consumers that move records on in bulk (the
   * agent's spool), which then pay their per-step costs once per array instead of once per record.
   * A Failed job's reason comes last, alone in its array.
   */
  async *receiveBatches(
    selector: JobSelector,
    options: { autoRemove?: boolean } = {},
  ): AsyncGenerator<JobRecord[]> {
    const jobs = selectJobs(this.#jobs, selector);
    yield* batchRecords(leavesOf(jobs), (leaf) => this.#drained(leaf));
    if (options.autoRemove) await this.remove(jobs);
  }

  /**
   * Waits for the selected jobs to finish (Completed, Failed or Stopped) and returns them; with
   * `any`, returns the first to finish. A timeout returns an empty list; it is not an error.
   */
  async wait(selector: JobSelector, options: WaitOptions = {}): Promise<Job[]> {
    const jobs = selectJobs(this.#jobs, selector);
    return waitFor(jobs, options);
  }

  /**
   * Suspends the selected running jobs (their type's `suspend`: a process job's group gets
   * SIGSTOP); they show Suspended until {@link continueJobs}. Refuses (ERR_INVALID_ARGUMENT,
   * suspending nothing) a job that is not Running or whose type cannot suspend.
   */
  suspend(selector: JobSelector): Job[] {
    const jobs = selectJobs(this.#jobs, selector);
    for (const job of jobs) {
      const run = this.#leaves.get(job)?.run;
      if (job.state !== 'Running' || !run?.suspend) {
        throw new RjobError(
          ErrorCode.InvalidArgument,
          `Job ${job.id} (${job.name}) cannot be suspended: it is ${job.state}${run && !run.suspend ? ' and its type does not suspend' : ''}.`,
          { details: { jobId: job.id, state: job.state } },
        );
      }
    }
    for (const job of jobs) {
      this.#leaves.get(job)!.run!.suspend!();
      job.setState('Suspended');
    }
    return jobs;
  }

  /** Lets suspended jobs go on (SIGCONT); jobs that are not Suspended are left as they are. */
  continueJobs(selector: JobSelector): Job[] {
    const jobs = selectJobs(this.#jobs, selector);
    for (const job of jobs) {
      if (job.state !== 'Suspended') continue;
      this.#leaves.get(job)?.run?.continue?.();
      job.setState('Running');
    }
    return jobs;
  }

  /**
   * Writes to one running job's input (its type's `write`: a process job's stdin pipe); with
   * `end`, closes the input afterwards (or only closes it, without data). Refuses a job that is
   * not running (ERR_JOB_NOT_RUNNING) or takes no input (ERR_STDIN_CLOSED).
   */
  async writeInput(
    selector: number | string | Job,
    data: string | Uint8Array | undefined,
    options: { end?: boolean } = {},
  ): Promise<Job> {
    const job = this.job(selector);
    const run = this.#leaves.get(job)?.run;
    if (job.state !== 'Running' && job.state !== 'Suspended' && job.state !== 'Disconnected') {
      throw new RjobError(
        ErrorCode.JobNotRunning,
        `Job ${job.id} (${job.name}) is ${job.state}; only a running job takes input.`,
        { details: { jobId: job.id, state: job.state } },
      );
    }
    if (!run?.write) {
      throw new RjobError(
        ErrorCode.StdinClosed,
        `Job ${job.id} (${job.name}) takes no input: start it with an open stdin (stdinOpen) to send to it.`,
        { details: { jobId: job.id } },
      );
    }
    if (data !== undefined && data.length > 0) await run.write(data);
    if (options.end) run.endInput?.();
    return job;
  }

  /** Stops the selected jobs and resolves when they have ended. */
  async stop(selector: JobSelector): Promise<Job[]> {
    const jobs = selectJobs(this.#jobs, selector);
    await Promise.all(jobs.map((job) => this.#stop(job)));
    return jobs;
  }

  /**
   * Removes finished jobs and their records. Refuses (ERR_JOB_RUNNING, removing nothing) when a
   * selected job is still running, unless `force`, which stops it first.
   */
  async remove(selector: JobSelector, options: RemoveOptions = {}): Promise<Job[]> {
    const jobs = selectJobs(this.#jobs, selector);
    for (const job of jobs) {
      if (job.parent) {
        throw new RjobError(
          ErrorCode.InvalidArgument,
          `Job ${job.id} is a child of job ${job.parent.id}; remove the parent instead.`,
          { details: { jobId: job.id, parentId: job.parent.id } },
        );
      }
    }
    const running = jobs.filter((job) => !job.finished);
    if (running.length > 0 && !options.force) {
      const ids = running.map((job) => job.id);
      throw new RjobError(
        ErrorCode.JobRunning,
        `Cannot remove job ${ids.join(', ')}: it is ${running[0]!.state}. Stop it first or use force.`,
        { details: { jobIds: ids } },
      );
    }
    if (running.length > 0) await this.stop(running);
    for (const job of jobs) {
      this.#jobs.delete(job.id);
      for (const leaf of leavesOf([job])) this.#leaves.delete(leaf);
    }
    return jobs;
  }

  /** Stops every job and releases the job types. The manager takes no new work afterwards. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all([...this.#jobs.values()].map((job) => this.#stop(job)));
    await Promise.all(this.types.map((type) => type.dispose?.()));
  }

  #assertOpen(): void {
    if (this.#closed) throw new RjobError(ErrorCode.ManagerClosed, 'The job manager is closed.');
  }

  #resolveType<D>(type: string | JobType<D>): JobType<D> {
    if (typeof type !== 'string') return type;
    const found = this.#types.get(type.toLowerCase());
    if (!found) {
      const known = this.types.map((t) => t.name).join(', ') || 'none';
      throw new RjobError(ErrorCode.UnknownJobType, `No job type named "${type}" (registered: ${known}).`, {
        details: { type },
      });
    }
    return found;
  }

  #typeName(nameOrAlias: string): string {
    return (this.#types.get(nameOrAlias.toLowerCase())?.name ?? nameOrAlias).toLowerCase();
  }

  #createJob(
    type: JobType,
    definition: unknown,
    options: StartOptions,
    parent: Job | undefined,
    typeName?: string,
    restored?: RestoredIdentity,
  ): Job {
    const id = restored?.id ?? this.#nextId++;
    const init = {
      ...restoredTimes(restored),
      id,
      instanceId: restored?.instanceId ?? options.instanceId ?? randomUUID(),
      name: options.name ?? `Job${id}`,
      type: typeName ?? type.name,
      command: options.command ?? type.describe(definition),
      location: options.location ?? this.#location,
      ...(parent ? { parent } : {}),
    };
    const job = new Job(init);
    if (!parent) this.#jobs.set(id, job);
    this.#leaves.set(job, { job, type, paused: false });
    return job;
  }

  async #launch(job: Job, type: JobType, definition: unknown): Promise<void> {
    const leaf = this.#leaves.get(job)!;
    const controller = new AbortController();
    let finished = false;
    const context: JobContext & { abort(): void } = {
      jobId: job.id,
      instanceId: job.instanceId,
      name: job.name,
      signal: controller.signal,
      abort: () => controller.abort(),
      running: () => {
        if (job.state === 'NotStarted') job.setState('Running');
      },
      emit: (stream, data, sizeBytes) => this.#emit(leaf, stream, data, sizeBytes),
      finish: (outcome) => {
        if (finished) return;
        finished = true;
        this.#finish(job, outcome);
      },
      disconnected: () => {
        if (!finished && job.state === 'Running') job.setState('Disconnected');
      },
      reconnected: () => {
        if (!finished && job.state === 'Disconnected') job.setState('Running');
      },
    };
    leaf.context = context;
    try {
      leaf.run = await type.start(definition, context);
    } catch (error) {
      context.finish({ state: 'Failed', reason: toRjobError(error, ErrorCode.JobStartFailed) });
      return;
    }
    // A stop asked for while the type was still starting is delivered now.
    if (job.stopRequested && !job.finished) void leaf.run.stop();
    if (leaf.paused) leaf.run.pause?.();
  }

  #emit(leaf: Leaf, stream: StreamName, data: unknown, sizeBytes?: number): boolean {
    const job = leaf.job;
    if (job.finished) return false;
    const record: JobRecord = {
      stream,
      data,
      seq: job.nextSeq++,
      timeMs: Date.now(),
      jobId: job.id,
      location: job.location,
    };
    job.buffer.push(record, sizeBytes ?? estimateSize(data));
    if (!leaf.paused && job.buffer.bytes > this.#maxBufferedBytes) {
      leaf.paused = true;
      leaf.run?.pause?.();
    }
    job.notify();
    return !leaf.paused;
  }

  /** Called after records were consumed: resumes a paused producer below the low-water mark. */
  #drained(job: Job): void {
    const leaf = this.#leaves.get(job);
    if (leaf?.paused && job.buffer.bytes <= this.#maxBufferedBytes / 2) {
      leaf.paused = false;
      leaf.run?.resume?.();
    }
  }

  #finish(job: Job, outcome: JobOutcome): void {
    if (job.finished) return;
    let state: JobState = outcome.state;
    // Whatever a job type reports while a stop is under way, the user asked for Stopped.
    if (job.stopRequested && state === 'Failed') state = 'Stopped';
    if (state === 'Completed' && job.state === 'NotStarted') job.setState('Running');
    // A type that could not carry the stop out (a remote job whose session is out of reach) says
    // why; the job is Stopped and keeps that reason.
    job.setState(state, outcome.state === 'Failed' ? outcome.reason : undefined);
  }

  async #stop(job: Job): Promise<void> {
    if (job.finished) return;
    job.stopRequested = true;
    if (job.children.length > 0) {
      await Promise.all(job.children.map((child) => this.#stop(child)));
      deriveParentState(job);
      return;
    }
    const leaf = this.#leaves.get(job);
    if (!leaf?.context) {
      // Never launched (a throttled child): nothing runs, so it is simply stopped.
      job.setState('Stopped');
      return;
    }
    if (job.state !== 'Stopping') job.setState('Stopping');
    const ended = this.wait(job);
    leaf.context.abort();
    // Without a run the type is still starting; #launch delivers the stop once it has one.
    if (leaf.run) {
      try {
        await leaf.run.stop();
      } catch {
        // A failing stop leaves the outcome to the type's finish(); nothing to add here.
      }
    }
    await ended;
  }
}
