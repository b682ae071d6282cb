// @ts-check
/**
 * rjob's JS-work runtime: runs JavaScript work for a job inside a worker thread (ThreadJob) or a
 * node child process (BackgroundJob's node mode) and reports back to the host over a tiny channel.
 *
 * This file is plain ESM with JSDoc types on purpose: it is loaded by workers and children without a
 * build step or a TypeScript loader, so it imports nothing but `node:` builtins.
 *
 * ## API (stable; the host side lives in host.ts)
 *
 * - `serve(channel, options?)` listens on a {@link RunnerChannel} and runs every `run` message it
 *   receives. It posts `{ type: 'ready', version }` once, first. Returns `{ close() }`.
 * - `worker-entry.js` calls `serve()` on `worker_threads.parentPort`; `child-entry.js` calls it on a
 *   node child's IPC channel (spawned with `serialization: 'advanced'`) and exits the child when
 *   its one run is done.
 *
 * ## Work
 *
 * A {@link WorkSpec} is one of
 * - `{ kind: 'fn', source, argsBytes }`: a function's source text, evaluated as an expression in the
 *   global scope (closures do not cross; compiled functions are cached by source);
 * - `{ kind: 'module', specifier, exportName = 'default', argsBytes }`: `import(specifier)` (an absolute
 *   path or a URL) and call that export;
 * - `{ kind: 'eval', code, argsBytes }`: `code` is the body of an async generator function with `ctx`
 *   and `args` in scope (`for (let i = 0; i < 3; i++) yield i`).
 *
 * Arguments travel as `argsBytes = v8.serialize(args)` (or plain `args`, cloned by the channel).
 * The work is called as `work(ctx, ...args)`; `ctx` is a {@link WorkContext}. What it gives back:
 * - an async or sync iterator/generator: each value it yields is an output record, streamed while
 *   it runs; its `return` value, when not undefined, is one last output record;
 * - anything else not undefined (a promise is awaited first): one output record. Arrays, Maps and
 *   Sets are values, not streams: `yield*` them to stream their items;
 * - a throw: the run ends with the error serialized (name, message, stack, code, cause).
 *
 * ## Protocol (host ⇄ runner messages, all structured-cloneable)
 *
 * host → runner: `run { runId, spec, creditBytes }`, `credit { runId, bytes }`, `stop { runId }`.
 * runner → host: `ready { version }`, `records { runId, count, batch }`, `done { runId, error?,
 * phase?, stopped? }`.
 *
 * Records are batched: a batch is `v8.serialize([streamCode, data, streamCode, data, ...])`
 * (stream codes index {@link STREAM_CODES}; code 7 is an error record whose data is a serialized
 * error to be revived on the host). A batch is flushed when it holds {@link BATCH_RECORDS} records,
 * on the next macrotask, or when the run ends. We serialize ourselves (rather than letting
 * postMessage/IPC do it) so a value that cannot be cloned is caught per record, here, and the batch
 * size in bytes is known for flow control.
 *
 * Flow control is credit-based, in bytes: the run starts with `creditBytes`; each batch sent
 * spends its size (a batch may overdraw once); the host gives credit back as it accepts records and
 * withholds it while its buffer is paused. Out of credit, the runner stops pulling from the work's
 * iterator (and `ctx.ready()` waits) until credit comes back, so a fast producer cannot flood the
 * host. Plain `ctx.write` calls cannot block; they return false when out of credit and their records
 * wait in this thread.
 *
 * ## Values that cannot be cloned
 *
 * A record whose value cannot be cloned (a function, a symbol, a WeakMap, ...) is replaced by an
 * error record carrying code ERR_VALUE_NOT_CLONEABLE that names the record and the path of the
 * offending value; the job goes on. (PowerShell's non-terminating errors behave the same way; a
 * single bad record should not throw away the good ones.) A DataCloneError never reaches the
 * channel.
 *
 * ## Stop
 *
 * `stop` aborts `ctx.signal`. The runner also stops pulling from an iterator and calls its
 * `return()` so `finally` blocks run. The host forces the thread or process down after its grace
 * period if the work does not end.
 */
import { serializeError } from './serialize-error.js';
import v8 from 'node:v8';
import { findUncloneable, isIterator, isThenable, RuntimeErrorCode, resolveWork } from './work-values.js';

export { findUncloneable } from './work-values.js';

/** Bumped when a message changes shape. */
export const RUNTIME_PROTOCOL_VERSION = 1;

/** Stream names by code, as in @rjob/core's STREAMS. */
export const STREAM_CODES = /** @type {const} */ ([
  'output',
  'error',
  'warning',
  'verbose',
  'debug',
  'information',
  'progress',
]);

/** Stream code of an error record whose data is a {@link SerializedError}. */
export const SERIALIZED_ERROR_CODE = 7;

/** A batch is flushed when it holds this many records (or on the next macrotask). */
export const BATCH_RECORDS = 512;

/** Default initial credit when a `run` message carries none. */
export const DEFAULT_CREDIT_BYTES = 1024 * 1024;

/**
 * @typedef {{ name: string, message: string, code?: string, stack?: string,
 *   details?: Record<string, unknown>, cause?: SerializedError }} SerializedError
 */

/**
 * `args` crosses by the channel's structured clone; `argsBytes` (what the host sends) is
 * `v8.serialize(args)`, which also keeps Buffers as Buffers. `argsBytes` wins when both are given.
 * @typedef {{ args?: unknown[], argsBytes?: Uint8Array }} WorkArgs
 * @typedef {({ kind: 'fn', source: string }
 *   | { kind: 'module', specifier: string, exportName?: string }
 *   | { kind: 'eval', code: string }) & WorkArgs} WorkSpec
 */

/**
 * @typedef {{ type: 'run', runId: number, spec: WorkSpec, creditBytes?: number }
 *   | { type: 'credit', runId: number, bytes: number }
 *   | { type: 'stop', runId: number }} HostMessage
 */

/**
 * `phase: 'start'` means the work could not be loaded or compiled; `stopped` that it ended after
 * a stop request.
 * @typedef {{ type: 'ready', version: number }
 *   | { type: 'records', runId: number, count: number, batch: Uint8Array }
 *   | { type: 'done', runId: number, error?: SerializedError, phase?: 'start' | 'run',
 *       stopped?: boolean }} RunnerMessage
 */

/**
 * The two ends of a worker's parentPort or a child's IPC, reduced to what the runtime needs.
 * `transfer` is a hint; channels that cannot transfer ignore it.
 * @typedef {{ post(message: RunnerMessage, transfer?: ArrayBuffer[]): void,
 *   on(handler: (message: HostMessage) => void): void }} RunnerChannel
 */

/**
 * @typedef {{ activity: string, status?: string, percentComplete?: number }} ProgressData
 */

/**
 * What the work receives as its first argument.
 * @typedef {object} WorkContext
 * @property {(value: unknown) => boolean} write Writes an output record. False when out of credit
 *   (await `ready()` before writing more).
 * @property {(value: unknown) => boolean} error Writes an error record (non-terminating). An Error
 *   keeps its name, message, stack, code and cause.
 * @property {(value: unknown) => boolean} warning
 * @property {(value: unknown) => boolean} verbose
 * @property {(value: unknown) => boolean} debug
 * @property {(value: unknown) => boolean} information
 * @property {(value: ProgressData) => boolean} progress
 * @property {() => Promise<void>} ready Resolves when the host can take more records.
 * @property {AbortSignal} signal Aborted when the job is asked to stop.
 */

/**
 * @typedef {object} ServeOptions
 * @property {(runId: number) => void} [onRunEnd] Called after a run's `done` message was posted.
 */

/**
 * Runs every `run` message that arrives on `channel`.
 * @param {RunnerChannel} channel
 * @param {ServeOptions} [options]
 * @returns {{ close(): void }}
 */
export function serve(channel, options = {}) {
  /** @type {Map<number, Run>} */
  const runs = new Map();
  let closed = false;
  channel.on((message) => {
    if (closed || message === null || typeof message !== 'object') return;
    if (message.type === 'run') {
      const run = new Run(channel, message.runId, message.creditBytes ?? DEFAULT_CREDIT_BYTES);
      runs.set(message.runId, run);
      run.execute(message.spec).finally(() => {
        runs.delete(message.runId);
        options.onRunEnd?.(message.runId);
      });
    } else if (message.type === 'credit') {
      runs.get(message.runId)?.grant(message.bytes);
    } else if (message.type === 'stop') {
      runs.get(message.runId)?.stop();
    }
  });
  channel.post({ type: 'ready', version: RUNTIME_PROTOCOL_VERSION });
  return {
    close() {
      closed = true;
      for (const run of runs.values()) run.stop();
    },
  };
}

class Run {
  /** @type {unknown[]} stream code, data, stream code, data, ... */
  pending = [];
  pendingCount = 0;
  flushScheduled = false;
  /** @type {(() => void)[]} */
  creditWaiters = [];
  abort = new AbortController();
  recordNumber = 0;

  /**
   * @param {RunnerChannel} channel
   * @param {number} runId
   * @param {number} creditBytes
   */
  constructor(channel, runId, creditBytes) {
    this.channel = channel;
    this.runId = runId;
    this.credit = creditBytes;
    this.flushSoon = () => {
      this.flushScheduled = false;
      this.flush();
    };
    /** @type {WorkContext} */
    this.ctx = {
      write: (value) => this.push(0, value),
      error: (value) =>
        value instanceof Error
          ? this.push(SERIALIZED_ERROR_CODE, serializeError(value))
          : this.push(1, value),
      warning: (value) => this.push(2, value),
      verbose: (value) => this.push(3, value),
      debug: (value) => this.push(4, value),
      information: (value) => this.push(5, value),
      progress: (value) => this.push(6, value),
      ready: () => this.waitForCredit(),
      signal: this.abort.signal,
    };
  }

  /** @param {WorkSpec} spec */
  async execute(spec) {
    /** @type {(...args: unknown[]) => unknown} */
    let work;
    try {
      work = await resolveWork(spec);
    } catch (error) {
      this.post({ type: 'done', runId: this.runId, error: serializeError(error), phase: 'start' });
      return;
    }
    /** @type {SerializedError | undefined} */
    let failure;
    if (this.abort.signal.aborted) {
      // Stopped while a module was still loading: do not start work nobody wants any more.
      this.post({ type: 'done', runId: this.runId, stopped: true });
      return;
    }
    try {
      const args = spec.argsBytes
        ? /** @type {unknown[]} */ (v8.deserialize(spec.argsBytes))
        : (spec.args ?? []);
      let result = work(this.ctx, ...args);
      if (isThenable(result)) result = await result;
      if (isIterator(result)) await this.drain(result);
      else if (result !== undefined) this.push(0, result);
    } catch (error) {
      failure = serializeError(error);
    }
    await this.flushAll();
    /** @type {RunnerMessage} */
    const done = { type: 'done', runId: this.runId };
    if (failure) {
      done.error = failure;
      done.phase = 'run';
    }
    if (this.abort.signal.aborted) done.stopped = true;
    this.post(done);
  }

  /** @param {any} iterator */
  async drain(iterator) {
    const it =
      typeof iterator[Symbol.asyncIterator] === 'function' ? iterator[Symbol.asyncIterator]() : iterator;
    const signal = this.abort.signal;
    let sinceYield = 0;
    while (!signal.aborted) {
      if (this.credit <= 0) {
        await this.waitForCredit();
        if (signal.aborted) break;
      }
      let step = it.next();
      if (isThenable(step)) step = await step;
      if (step.done) {
        if (step.value !== undefined) this.push(0, step.value);
        return;
      }
      this.push(0, step.value);
      // Work that never really awaits would starve the macrotask queue, where credit and stop
      // messages arrive; give it a turn once per batch.
      if (++sinceYield >= BATCH_RECORDS) {
        sinceYield = 0;
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    if (typeof it.return === 'function') await it.return();
  }

  /**
   * @param {number} code
   * @param {unknown} data
   */
  push(code, data) {
    this.pending.push(code, data);
    this.recordNumber++;
    if (++this.pendingCount >= BATCH_RECORDS) this.flush();
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushSoon);
    }
    return this.credit > 0;
  }

  /**
   * Sends what is pending if there is credit (or `force`); true when nothing is left pending.
   * @param {boolean} [force]
   */
  flush(force = false) {
    if (this.pendingCount === 0) return true;
    if (this.credit <= 0 && !force) return false;
    const records = this.pending;
    const count = this.pendingCount;
    const firstNumber = this.recordNumber - count + 1;
    this.pending = [];
    this.pendingCount = 0;
    let batch;
    try {
      batch = v8.serialize(records);
    } catch {
      batch = serializeRecordByRecord(records, firstNumber);
    }
    this.credit -= batch.byteLength;
    const ownsBuffer = batch.byteOffset === 0 && batch.buffer.byteLength === batch.byteLength;
    this.post(
      { type: 'records', runId: this.runId, count, batch },
      ownsBuffer ? [/** @type {ArrayBuffer} */ (batch.buffer)] : undefined,
    );
    return true;
  }

  /**
   * Sends everything, waiting for credit as needed. After a stop nobody may be draining, and the
   * host will force us down after its grace period anyway: send what is left rather than wait.
   */
  async flushAll() {
    while (!this.flush(this.abort.signal.aborted)) await this.waitForCredit();
  }

  /** @param {number} bytes */
  grant(bytes) {
    this.credit += bytes;
    if (this.credit > 0) {
      if (this.pendingCount > 0) this.flush();
      this.wake();
    }
  }

  stop() {
    if (this.abort.signal.aborted) return;
    this.abort.abort(new DOMException('The job was asked to stop.', 'AbortError'));
    this.wake();
  }

  wake() {
    const waiters = this.creditWaiters;
    this.creditWaiters = [];
    for (const resolve of waiters) resolve();
  }

  /** @returns {Promise<void>} */
  waitForCredit() {
    if (this.credit > 0 || this.abort.signal.aborted) return Promise.resolve();
    return new Promise((resolve) => this.creditWaiters.push(resolve));
  }

  /**
   * @param {RunnerMessage} message
   * @param {ArrayBuffer[]} [transfer]
   */
  post(message, transfer) {
    try {
      this.channel.post(message, transfer);
    } catch (error) {
      // Only `done` can carry user data (an error's details); never let that kill the runtime.
      if (message.type !== 'done' || !message.error) throw error;
      const { details: _details, cause: _cause, ...plain } = message.error;
      this.channel.post({ ...message, error: plain });
    }
  }
}

/**
 * @param {unknown[]} records
 * @param {number} firstNumber
 */
function serializeRecordByRecord(records, firstNumber) {
  for (let i = 0; i < records.length; i += 2) {
    try {
      v8.serialize(records[i + 1]);
    } catch (error) {
      const stream = STREAM_CODES[/** @type {number} */ (records[i])] ?? 'error';
      const found = findUncloneable(records[i + 1], 'value', new Set());
      const what = found
        ? `${found.path} is ${found.description}`
        : `the value could not be cloned (${error instanceof Error ? error.message : String(error)})`;
      records[i] = SERIALIZED_ERROR_CODE;
      records[i + 1] = {
        name: 'RjobError',
        code: RuntimeErrorCode.ValueNotCloneable,
        message: `Record ${firstNumber + i / 2} (${stream}) cannot cross the thread or process boundary: ${what}. Functions, symbols and other non-cloneable values cannot be sent; send plain data instead.`,
        details: { stream, path: found?.path ?? null },
      };
    }
  }
  return v8.serialize(records);
}
