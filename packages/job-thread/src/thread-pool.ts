/**
 * A pool of worker threads, each running rjob's JS-work runtime, one job at a time per worker.
 *
 * Why not piscina: piscina's unit is a task that returns one result; a job streams records while it
 * runs, with flow control in both directions, and must be able to terminate *its* worker (a forced
 * stop, a timeout, an out-of-memory death) without disturbing the others, then get a fresh one.
 * With piscina that means side channels (a MessagePort per task) plus its abort path, which
 * rejects the task but hides which worker died and when a replacement is warm. Owning the pool is
 * ~250 lines and keeps the warm path to one postMessage each way.
 */
import { availableParallelism } from 'node:os';
import { type ResourceLimits, Worker } from 'node:worker_threads';
import {
  channelFromPort,
  DEFAULT_STOP_GRACE_MS,
  ErrorCode,
  type HostChannel,
  type JobContext,
  type JobRun,
  RjobError,
  toRjobError,
  WORKER_ENTRY_URL,
  WorkSession,
  type WorkSpec,
} from '@rjob/core';

export interface ThreadPoolOptions {
  /** Jobs running at once; more wait in NotStarted. Default `os.availableParallelism()`. */
  throttleLimit?: number;
  /**
   * Workers kept started while idle, so a job starts without paying for a new thread (~30 ms).
   * Started with the first job (or {@link ThreadPool.warmUp}), not when the type is created.
   * Default 1.
   */
  minWarmWorkers?: number;
  /** An idle worker beyond `minWarmWorkers` is ended after this long. Default 30 000. */
  idleTimeoutMs?: number;
  /** Between a cooperative stop and terminating the worker. Default 2000. */
  stopGraceMs?: number;
  /** Limits for every worker; a job's own `maxOldGenerationSizeMb` overrides its field. */
  resourceLimits?: ResourceLimits;
  /**
   * Node flags for workers. Default: the process's own `execArgv` without the flags that only
   * make sense for a main script (`--input-type`), which would kill every worker at start.
   */
  execArgv?: string[];
}

export interface ThreadTask {
  spec: WorkSpec;
  context: JobContext;
  timeoutMs?: number;
  /** Runs the job on a worker created with this heap limit. */
  maxOldGenerationSizeMb?: number;
}

export interface ThreadPoolStats {
  workers: number;
  idle: number;
  busy: number;
  queued: number;
}

interface Pending {
  task: ThreadTask;
  key: string;
  session?: WorkSession;
  paused: boolean;
  done: boolean;
}

class PooledWorker {
  readonly worker: Worker;
  readonly channel: HostChannel;
  readonly key: string;
  readonly maxOldGenerationSizeMb: number | undefined;
  readonly ready: Promise<void>;
  session: WorkSession | undefined;
  retiring = false;
  exited = false;
  answered = false;
  lastError: Error | undefined;
  idleTimer: NodeJS.Timeout | undefined;

  constructor(worker: Worker, key: string, maxOldGenerationSizeMb: number | undefined) {
    this.worker = worker;
    this.channel = channelFromPort(worker);
    this.key = key;
    this.maxOldGenerationSizeMb = maxOldGenerationSizeMb;
    this.ready = new Promise<void>((resolve) => {
      worker.once('exit', () => resolve());
      this.channel.on((message) => {
        if (message.type === 'ready') {
          this.answered = true;
          resolve();
        } else this.session?.receive(message);
      });
    });
  }
}

export class ThreadPool {
  readonly throttleLimit: number;
  private readonly minWarmWorkers: number;
  private readonly idleTimeoutMs: number;
  private readonly stopGraceMs: number;
  private readonly options: ThreadPoolOptions;
  private readonly workers = new Set<PooledWorker>();
  /** Most recently used last: it is the warmest (caches, JIT). */
  private readonly idle: PooledWorker[] = [];
  private readonly queue: Pending[] = [];
  private busy = 0;
  private active = false;
  /** Workers that died before answering, in a row: a broken setup (bad execArgv), not bad luck. */
  private failedStarts = 0;
  private nextRunId = 1;

  constructor(options: ThreadPoolOptions = {}) {
    this.options = options;
    this.throttleLimit = positive(options.throttleLimit, availableParallelism(), 'throttleLimit');
    this.minWarmWorkers = nonNegative(options.minWarmWorkers, 1, 'minWarmWorkers');
    this.idleTimeoutMs = nonNegative(options.idleTimeoutMs, 30_000, 'idleTimeoutMs');
    this.stopGraceMs = nonNegative(options.stopGraceMs, DEFAULT_STOP_GRACE_MS, 'stopGraceMs');
  }

  /** Starts the job now if a slot is free, else queues it (the job stays NotStarted). */
  start(task: ThreadTask): JobRun {
    this.active = true;
    const mb = task.maxOldGenerationSizeMb;
    const pending: Pending = { task, key: mb === undefined ? '' : `old:${mb}`, paused: false, done: false };
    if (this.busy < this.throttleLimit) this.dispatch(pending);
    else this.queue.push(pending);
    return {
      stop: () => {
        if (pending.session) return pending.session.stop();
        this.dequeue(pending, { state: 'Stopped' });
      },
      pause: () => {
        pending.paused = true;
        pending.session?.run.pause?.();
      },
      resume: () => {
        pending.paused = false;
        pending.session?.run.resume?.();
      },
    };
  }

  /** Starts the warm workers now and resolves once they can take work. */
  async warmUp(): Promise<void> {
    this.active = true;
    this.ensureWarm();
    const starting = [...this.workers];
    // Someone is waiting on these: hold the process open until they answer.
    for (const pw of starting) pw.worker.ref();
    await Promise.all(starting.map((pw) => pw.ready));
    for (const pw of starting) if (!pw.session && !pw.exited) pw.worker.unref();
  }

  stats(): ThreadPoolStats {
    return { workers: this.workers.size, idle: this.idle.length, busy: this.busy, queued: this.queue.length };
  }

  /** Stops queued jobs, ends every worker. The pool starts afresh if given work again. */
  async dispose(): Promise<void> {
    this.active = false;
    for (const pending of this.queue.splice(0)) this.dequeue(pending, { state: 'Stopped' });
    const exits: Promise<unknown>[] = [];
    for (const pw of this.workers) {
      // Marks a running job as stopping so the worker's death reads as Stopped, not a crash.
      if (pw.session) void pw.session.stop();
      exits.push(this.retire(pw));
    }
    await Promise.all(exits);
  }

  private dispatch(pending: Pending): void {
    const { task } = pending;
    this.busy++;
    const pw = this.takeIdle(pending.key) ?? this.spawn(pending.key, task.maxOldGenerationSizeMb);
    // A worker with a job keeps the process alive; an idle one must not.
    pw.worker.ref();
    let session: WorkSession;
    try {
      session = new WorkSession({
        channel: pw.channel,
        context: task.context,
        spec: task.spec,
        runId: this.nextRunId++,
        stopGraceMs: this.stopGraceMs,
        executor: 'worker thread',
        kill: async () => {
          await this.retire(pw);
        },
        onFinish: () => this.release(pw),
        ...(task.timeoutMs === undefined ? {} : { timeoutMs: task.timeoutMs }),
      });
    } catch (error) {
      this.busy--;
      pending.done = true;
      task.context.finish({ state: 'Failed', reason: toRjobError(error, ErrorCode.JobStartFailed) });
      this.makeIdle(pw);
      this.pump();
      return;
    }
    pw.session = session;
    pending.session = session;
    if (pending.paused) session.run.pause?.();
  }

  private dequeue(pending: Pending, outcome: { state: 'Stopped' }): void {
    if (pending.done || pending.session) return;
    pending.done = true;
    const index = this.queue.indexOf(pending);
    if (index >= 0) this.queue.splice(index, 1);
    pending.task.context.finish(outcome);
  }

  /** A job finished (on its own, stopped, or with its worker gone). */
  private release(pw: PooledWorker): void {
    this.busy--;
    pw.session = undefined;
    if (!pw.exited && !pw.retiring && this.active) this.makeIdle(pw);
    else if (!pw.exited && !pw.retiring) void this.retire(pw);
    this.pump();
  }

  private pump(): void {
    while (this.active && this.queue.length > 0 && this.busy < this.throttleLimit) {
      this.dispatch(this.queue.shift()!);
    }
    this.ensureWarm();
  }

  private ensureWarm(): void {
    // Respawning workers that cannot start would spin; jobs still get workers (and fail visibly).
    if (!this.active || this.failedStarts >= 3) return;
    let warm = 0;
    for (const pw of this.workers) if (pw.key === '' && !pw.retiring) warm++;
    for (; warm < this.minWarmWorkers; warm++) this.makeIdle(this.spawn('', undefined));
  }

  private takeIdle(key: string): PooledWorker | undefined {
    for (let i = this.idle.length - 1; i >= 0; i--) {
      const pw = this.idle[i]!;
      if (pw.key === key) {
        this.idle.splice(i, 1);
        clearTimeout(pw.idleTimer);
        return pw;
      }
    }
    // No worker fits: make room rather than grow past the limit with idle workers of another kind.
    if (this.workers.size >= Math.max(this.throttleLimit, this.minWarmWorkers) && this.idle.length > 0) {
      void this.retire(this.idle.shift()!);
    }
    return undefined;
  }

  private makeIdle(pw: PooledWorker): void {
    if (pw.exited || pw.retiring) return;
    pw.worker.unref();
    this.idle.push(pw);
    clearTimeout(pw.idleTimer);
    pw.idleTimer = setTimeout(() => this.onIdleTimeout(pw), this.idleTimeoutMs);
    pw.idleTimer.unref();
  }

  private onIdleTimeout(pw: PooledWorker): void {
    if (!this.idle.includes(pw)) return;
    let warm = 0;
    for (const w of this.workers) if (w.key === '' && !w.retiring) warm++;
    if (pw.key !== '' || warm > this.minWarmWorkers) void this.retire(pw);
  }

  private spawn(key: string, maxOldGenerationSizeMb: number | undefined): PooledWorker {
    const resourceLimits: ResourceLimits = { ...this.options.resourceLimits };
    if (maxOldGenerationSizeMb !== undefined) resourceLimits.maxOldGenerationSizeMb = maxOldGenerationSizeMb;
    const worker = new Worker(WORKER_ENTRY_URL, {
      resourceLimits,
      execArgv: this.options.execArgv ?? workerExecArgv(),
    });
    const pw = new PooledWorker(
      worker,
      key,
      maxOldGenerationSizeMb ?? this.options.resourceLimits?.maxOldGenerationSizeMb,
    );
    this.workers.add(pw);
    // Without a listener, a worker's uncaught error would be re-thrown in this thread.
    worker.on('error', (error) => {
      pw.lastError = error;
    });
    worker.on('exit', (exitCode) => this.onExit(pw, exitCode));
    return pw;
  }

  private retire(pw: PooledWorker): Promise<unknown> {
    pw.retiring = true;
    clearTimeout(pw.idleTimer);
    const index = this.idle.indexOf(pw);
    if (index >= 0) this.idle.splice(index, 1);
    if (pw.exited) return Promise.resolve();
    return pw.worker.terminate();
  }

  private onExit(pw: PooledWorker, exitCode: number): void {
    pw.exited = true;
    this.failedStarts = pw.answered || pw.retiring ? 0 : this.failedStarts + 1;
    this.workers.delete(pw);
    clearTimeout(pw.idleTimer);
    const index = this.idle.indexOf(pw);
    if (index >= 0) this.idle.splice(index, 1);
    const session = pw.session;
    if (session && !session.isFinished) session.lost(this.deathReason(pw, exitCode));
    else this.pump();
  }

  private deathReason(pw: PooledWorker, exitCode: number): RjobError {
    const error = pw.lastError as (Error & { code?: string }) | undefined;
    // Node's own code for a worker past its heap limit (not one of rjob's).
    if (error?.code === 'ERR_WORKER_OUT_OF_MEMORY') {
      const limit = pw.maxOldGenerationSizeMb;
      return new RjobError(
        ErrorCode.JobOutOfMemory,
        `The job ran out of memory${limit === undefined ? '' : ` (maxOldGenerationSizeMb: ${limit})`}.`,
        { cause: error, details: limit === undefined ? {} : { maxOldGenerationSizeMb: limit } },
      );
    }
    const why = error ? `: ${error.message}` : ` with code ${exitCode}`;
    return new RjobError(ErrorCode.JobCrashed, `The worker thread running the job died${why}.`, {
      exitCode,
      ...(error ? { cause: error } : {}),
    });
  }
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1) {
    throw new RjobError(ErrorCode.InvalidArgument, `${name} must be a positive integer, got ${value}.`);
  }
  return value;
}

function nonNegative(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value < 0) {
    throw new RjobError(ErrorCode.InvalidArgument, `${name} must be zero or more, got ${value}.`);
  }
  return value;
}

/** The owner's node flags minus those a worker refuses (`node --input-type=module -e ...`). */
function workerExecArgv(): string[] {
  const out: string[] = [];
  for (let i = 0; i < process.execArgv.length; i++) {
    const flag = process.execArgv[i]!;
    if (flag === '--input-type') i++;
    else if (!flag.startsWith('--input-type=')) out.push(flag);
  }
  return out;
}
