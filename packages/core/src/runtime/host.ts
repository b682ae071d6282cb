/**
 * Host side of the JS-work runtime (work-runner.js), shared by ThreadJob and BackgroundJob's node
 * mode so neither duplicates it:
 *
 * - {@link toWorkSpec} / {@link describeWork}: a user's `{ fn | module | eval, args }` definition →
 *   the spec the runner executes, and the job's command text.
 * - {@link WorkSession}: connects one run on a runner channel to a {@link JobContext}: record
 *   batches → `context.emit` (with sizes), `done` → `context.finish`, manager pause/resume → credit,
 *   a graceful stop (cooperative signal, then `kill()` after `stopGraceMs`), and `timeoutMs`.
 * - {@link channelFromPort} / {@link channelFromChild} and the entry files to start a runner in a
 *   worker ({@link WORKER_ENTRY_URL}) or a node child ({@link CHILD_ENTRY_PATH}).
 *
 * What the executor owner (a pool, a process job) still does: start the thread/process, route its
 * runner messages to {@link WorkSession.receive}, kill it when asked, and call
 * {@link WorkSession.lost} when it dies on its own.
 */
import type { ChildProcess } from 'node:child_process';
import { isAbsolute, resolve as resolvePath } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import v8 from 'node:v8';
import type { MessagePort, Worker } from 'node:worker_threads';
import { notCloneable } from '../codec/value-codec.js';
import { deserializeError, ErrorCode, RjobError, type SerializedError } from '../errors.js';
import type { JobContext, JobOutcome, JobRun } from '../job/job-type.js';
import { STREAMS } from '../job/records.js';
import {
  DEFAULT_CREDIT_BYTES,
  type HostMessage,
  type RunnerMessage,
  SERIALIZED_ERROR_CODE,
  type WorkContext,
  type WorkSpec,
} from './work-runner.js';

export type { HostMessage, RunnerMessage, WorkContext, WorkSpec };

/** Grace between a cooperative stop and killing the thread or process, unless told otherwise. */
export const DEFAULT_STOP_GRACE_MS = 2000;

/** The worker_threads entry that runs the runtime on `parentPort`. */
export const WORKER_ENTRY_URL: URL = new URL('./worker-entry.js', import.meta.url);

/**
 * The node-child entry that runs the runtime on its IPC channel; spawn it with an `'ipc'` stdio
 * slot and `serialization: 'advanced'`. The child exits when its run is done.
 */
export const CHILD_ENTRY_PATH: string = fileURLToPath(new URL('./child-entry.js', import.meta.url));

/** The host's end of a runner channel. */
export interface HostChannel {
  post(message: HostMessage, transfer?: ArrayBuffer[]): void;
  /** Subscribes to runner messages; returns the unsubscribe. */
  on(handler: (message: RunnerMessage) => void): () => void;
}

/** A worker (or a MessagePort) as a {@link HostChannel}. */
export function channelFromPort(port: Worker | MessagePort): HostChannel {
  return {
    post: (message, transfer) => port.postMessage(message, transfer),
    on(handler) {
      port.on('message', handler);
      return () => port.off('message', handler);
    },
  };
}

/** A child spawned with an IPC channel (`serialization: 'advanced'`) as a {@link HostChannel}. */
export function channelFromChild(child: ChildProcess): HostChannel {
  return {
    post(message) {
      // A child that just died has a closed channel; its exit is reported through `lost`.
      if (child.connected) child.send(message);
    },
    on(handler) {
      const listener = (message: unknown) => handler(message as RunnerMessage);
      child.on('message', listener);
      return () => child.off('message', listener);
    },
  };
}

/** A function to run as a job. Its source text is what crosses; see {@link WorkDefinition}. */
export type WorkFunction = (ctx: WorkContext, ...args: any[]) => unknown;

/**
 * JS work as users give it to ThreadJob or BackgroundJob (node mode).
 *
 * - `fn`: a function, or its source text. Only its source crosses the boundary, so it cannot use
 *   variables from the scope where it was written (closures, imports): pass data through `args`
 *   and import inside the function with `await import(...)`.
 * - `module`: a path (relative ones resolve against the current directory) or a URL, and the
 *   `export` to call (default `default`). Bare package names resolve from @rjob/core's location,
 *   so prefer paths.
 * - `eval`: the body of an async generator function with `ctx` and `args` in scope.
 *
 * `args` must be structured-cloneable.
 */
export type WorkDefinition =
  | { fn: WorkFunction | string; args?: unknown[] }
  | { module: string | URL; export?: string; args?: unknown[] }
  | { eval: string; args?: unknown[] };

/**
 * Turns a {@link WorkDefinition} into the spec a runner executes. Throws ERR_INVALID_ARGUMENT for a
 * malformed definition and ERR_VALUE_NOT_CLONEABLE when `args` cannot cross.
 */
export function toWorkSpec(definition: WorkDefinition, cwd: string = process.cwd()): WorkSpec {
  if (definition === null || typeof definition !== 'object') {
    throw invalid('A JS job needs a definition object with `fn`, `module` or `eval`.');
  }
  const args = definition.args;
  if (args !== undefined && !Array.isArray(args)) throw invalid('`args` must be an array.');
  // Encoded here, once: this is the cloneability check, and v8 keeps Buffers as Buffers where
  // postMessage would turn them into Uint8Arrays.
  const argsBytes = args !== undefined && args.length > 0 ? encodeArgs(args) : undefined;
  const withArgs = <T extends WorkSpec>(spec: T): T =>
    argsBytes === undefined ? spec : { ...spec, argsBytes };
  if ('fn' in definition) {
    const { fn } = definition;
    if (typeof fn === 'function') return withArgs({ kind: 'fn', source: fn.toString() });
    if (typeof fn === 'string' && fn.trim() !== '') return withArgs({ kind: 'fn', source: fn });
    throw invalid('`fn` must be a function or its source text.');
  }
  if ('module' in definition) {
    const exportName = definition.export ?? 'default';
    if (typeof exportName !== 'string' || exportName === '') throw invalid('`export` must be a name.');
    return withArgs({ kind: 'module', specifier: moduleSpecifier(definition.module, cwd), exportName });
  }
  if ('eval' in definition) {
    if (typeof definition.eval !== 'string') throw invalid('`eval` must be a string of code.');
    return withArgs({ kind: 'eval', code: definition.eval });
  }
  throw invalid('A JS job needs `fn`, `module` or `eval`.');
}

/** The command text of a definition, as shown in a job's `command`. */
export function describeWork(definition: WorkDefinition): string {
  if ('fn' in definition) return collapse(String(definition.fn));
  if ('module' in definition) {
    const name = String(definition.module);
    return definition.export && definition.export !== 'default' ? `${name}#${definition.export}` : name;
  }
  if ('eval' in definition) return collapse(definition.eval);
  return '';
}

/** Throws ERR_VALUE_NOT_CLONEABLE, naming the offending path, when `args` cannot be cloned. */
function encodeArgs(args: unknown[]): Uint8Array {
  try {
    return v8.serialize(args);
  } catch (error) {
    throw notCloneable(args, error);
  }
}

function moduleSpecifier(module: string | URL, cwd: string): string {
  if (module instanceof URL) return module.href;
  if (typeof module !== 'string' || module === '') throw invalid('`module` must be a path or a URL.');
  if (isAbsolute(module)) return pathToFileURL(module).href;
  if (module.startsWith('./') || module.startsWith('../') || module === '.' || module === '..') {
    return pathToFileURL(resolvePath(cwd, module)).href;
  }
  return module;
}

function collapse(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > 200 ? `${flat.slice(0, 199)}…` : flat;
}

function invalid(message: string): RjobError {
  return new RjobError(ErrorCode.InvalidArgument, message);
}

export interface WorkSessionOptions {
  /** Where to post the run's messages. Runner messages are fed back through `receive`. */
  channel: Pick<HostChannel, 'post'>;
  context: JobContext;
  spec: WorkSpec;
  /** Tells this run's messages apart from an earlier run's on the same channel. */
  runId: number;
  /** Fails the job with ERR_JOB_TIMEOUT (`timedOut: true`) after this long. Default: no limit. */
  timeoutMs?: number;
  /** Between the cooperative stop and `kill()`. Default {@link DEFAULT_STOP_GRACE_MS} (2000). */
  stopGraceMs?: number;
  /** Record bytes the runner may have in flight before the host gives credit back. Default 1 MiB. */
  creditBytes?: number;
  /** Names the executor in crash messages, e.g. `worker thread`. */
  executor?: string;
  /**
   * Ends the thread or process for good (terminate the worker, SIGKILL the group). The session
   * finishes the job once it settles.
   */
  kill(): void | Promise<void>;
  /** Called once, right after the job finished; `killed` says whether `kill()` was used. */
  onFinish?(outcome: JobOutcome, info: { killed: boolean }): void;
}

/**
 * One run of JS work, as the host sees it. Creating it posts the run and marks the job Running;
 * give {@link WorkSession.run} to the manager.
 */
export class WorkSession {
  readonly run: JobRun;
  readonly finished: Promise<JobOutcome>;
  private readonly options: WorkSessionOptions;
  private done = false;
  private killed = false;
  private stopRequested = false;
  private timedOut = false;
  private paused = false;
  private owedBytes = 0;
  private graceTimer: NodeJS.Timeout | undefined;
  private timeoutTimer: NodeJS.Timeout | undefined;
  private resolveFinished!: (outcome: JobOutcome) => void;

  constructor(options: WorkSessionOptions) {
    this.options = options;
    this.finished = new Promise((resolve) => {
      this.resolveFinished = resolve;
    });
    const { spec } = options;
    const message: HostMessage = {
      type: 'run',
      runId: options.runId,
      spec,
      creditBytes: options.creditBytes ?? DEFAULT_CREDIT_BYTES,
    };
    try {
      options.channel.post(message);
    } catch (error) {
      if (error instanceof Error && error.name === 'DataCloneError') throw notCloneable(spec.args, error);
      throw error;
    }
    options.context.running();
    if (options.timeoutMs !== undefined && options.timeoutMs >= 0 && Number.isFinite(options.timeoutMs)) {
      this.timeoutTimer = setTimeout(() => this.onTimeout(), options.timeoutMs);
    }
    this.run = {
      stop: () => this.stop(),
      pause: () => {
        this.paused = true;
      },
      resume: () => {
        this.paused = false;
        if (this.owedBytes > 0 && !this.done) {
          const bytes = this.owedBytes;
          this.owedBytes = 0;
          this.post({ type: 'credit', runId: this.options.runId, bytes });
        }
      },
    };
  }

  get isFinished(): boolean {
    return this.done;
  }

  /** Feeds a message from the runner. Messages of other runs are ignored. */
  receive(message: RunnerMessage): void {
    if (this.done || message.type === 'ready' || message.runId !== this.options.runId) return;
    if (message.type === 'records') this.onRecords(message.batch, message.count);
    else if (message.type === 'done') this.onDone(message.error, message.phase);
  }

  /** The thread or process died on its own; `reason` is used unless a stop or timeout explains it. */
  lost(reason: RjobError): void {
    this.end(reason);
  }

  /** Cooperative stop, then `kill()` after the grace period. Resolves when the job has finished. */
  stop(): Promise<void> {
    if (!this.done && !this.stopRequested) {
      this.stopRequested = true;
      this.requestStop();
    }
    return this.finished.then(() => undefined);
  }

  private onTimeout(): void {
    if (this.done || this.stopRequested) return;
    this.timedOut = true;
    this.requestStop();
  }

  private requestStop(): void {
    this.post({ type: 'stop', runId: this.options.runId });
    if (this.graceTimer) return;
    this.graceTimer = setTimeout(() => void this.force(), this.options.stopGraceMs ?? DEFAULT_STOP_GRACE_MS);
  }

  private async force(): Promise<void> {
    if (this.done) return;
    this.killed = true;
    try {
      await this.options.kill();
    } catch {
      // A kill that fails means the executor is already gone.
    }
    this.end(undefined);
  }

  private onRecords(batch: Uint8Array, count: number): void {
    const { context } = this.options;
    const records = v8.deserialize(batch) as unknown[];
    const sizeBytes = count > 0 ? batch.byteLength / count : 0;
    for (let i = 0; i < records.length; i += 2) {
      const code = records[i] as number;
      if (code === SERIALIZED_ERROR_CODE) {
        context.emit('error', deserializeError(records[i + 1] as SerializedError), sizeBytes);
      } else {
        context.emit(STREAMS[code] ?? 'output', records[i + 1], sizeBytes);
      }
    }
    if (this.paused) this.owedBytes += batch.byteLength;
    else this.post({ type: 'credit', runId: this.options.runId, bytes: batch.byteLength });
  }

  private onDone(error: SerializedError | undefined, phase: 'start' | 'run' | undefined): void {
    if (!error) {
      this.end(undefined, true);
      return;
    }
    const cause = deserializeError(error);
    const reason =
      phase === 'start'
        ? new RjobError(ErrorCode.JobStartFailed, `The job could not start: ${error.message}`, { cause })
        : new RjobError(ErrorCode.JobThrew, error.message, { cause });
    this.end(reason, true);
  }

  /** `failure` is what happened absent a stop or timeout; `ranToEnd` that the work itself ended. */
  private end(failure: RjobError | undefined, ranToEnd = false): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.graceTimer);
    clearTimeout(this.timeoutTimer);
    let outcome: JobOutcome;
    if (this.timedOut) {
      const timeoutMs = this.options.timeoutMs;
      outcome = {
        state: 'Failed',
        reason: new RjobError(ErrorCode.JobTimeout, `The job ran past its timeout of ${timeoutMs} ms.`, {
          timedOut: true,
          details: { timeoutMs },
        }),
      };
    } else if (this.stopRequested) {
      outcome = { state: 'Stopped' };
    } else if (failure) {
      outcome = { state: 'Failed', reason: failure };
    } else if (ranToEnd) {
      outcome = { state: 'Completed' };
    } else {
      const executor = this.options.executor ?? 'executor';
      outcome = {
        state: 'Failed',
        reason: new RjobError(ErrorCode.JobCrashed, `The ${executor} running the job ended unexpectedly.`),
      };
    }
    this.options.context.finish(outcome);
    this.resolveFinished(outcome);
    this.options.onFinish?.(outcome, { killed: this.killed });
  }

  private post(message: HostMessage): void {
    try {
      this.options.channel.post(message);
    } catch {
      // The executor is going away; its exit is reported through `lost`.
    }
  }
}
