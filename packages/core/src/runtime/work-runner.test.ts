import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MessageChannel } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { RjobError } from '../errors.js';
import type { JobContext, JobOutcome } from '../job/job-type.js';
import type { StreamName } from '../job/records.js';
import {
  CHILD_ENTRY_PATH,
  channelFromChild,
  channelFromPort,
  type HostChannel,
  toWorkSpec,
  type WorkDefinition,
  type WorkFunction,
  WorkSession,
  type WorkSessionOptions,
} from './host.js';
import { serve } from './work-runner.js';

// The runner and the host on the two ends of a MessageChannel, in this thread: everything but the
// thread boundary itself (job-thread's tests cover that).

interface Captured {
  stream: StreamName;
  data: unknown;
  sizeBytes: number | undefined;
}

function fakeContext() {
  const records: Captured[] = [];
  const abort = new AbortController();
  let resolveOutcome!: (outcome: JobOutcome) => void;
  const outcome = new Promise<JobOutcome>((resolve) => {
    resolveOutcome = resolve;
  });
  const state = { running: 0, finished: 0, onEmit: (_record: Captured) => {} };
  const context: JobContext = {
    jobId: 1,
    instanceId: 'test',
    name: 'Job1',
    signal: abort.signal,
    running: () => {
      state.running++;
    },
    emit(stream, data, sizeBytes) {
      const record = { stream, data, sizeBytes };
      records.push(record);
      state.onEmit(record);
      return true;
    },
    finish(result) {
      if (state.finished++ === 0) resolveOutcome(result);
    },
  };
  return { context, records, outcome, state, abort };
}

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
});

let nextRunId = 1;

function start(definition: WorkDefinition, options: Partial<WorkSessionOptions> = {}) {
  const { port1, port2 } = new MessageChannel();
  serve({
    post: (message, transfer) => port2.postMessage(message, transfer),
    on: (h) => port2.on('message', h),
  });
  const channel: HostChannel = channelFromPort(port1);
  const fake = fakeContext();
  const kills: number[] = [];
  const session = new WorkSession({
    channel,
    context: fake.context,
    spec: toWorkSpec(definition),
    runId: nextRunId++,
    kill: () => {
      kills.push(1);
    },
    ...options,
  });
  channel.on((message) => session.receive(message));
  cleanups.push(() => {
    port1.close();
    port2.close();
  });
  return { ...fake, session, kills };
}

const data = (records: Captured[], stream: StreamName = 'output') =>
  records.filter((r) => r.stream === stream).map((r) => r.data);

describe('work runner over a MessageChannel', () => {
  it('runs a function and reports its return value as one output record', async () => {
    const job = start({ fn: (_ctx: unknown, a: number, b: number) => a + b, args: [2, 3] });
    expect(await job.outcome).toEqual({ state: 'Completed' });
    expect(data(job.records)).toEqual([5]);
    expect(job.state.running).toBe(1);
    expect(job.records[0]?.sizeBytes).toBeGreaterThan(0);
  });

  it('keeps emission order across streams and streams generator values', async () => {
    const job = start({
      fn: async function* (ctx: any) {
        ctx.verbose('v1');
        yield 1;
        ctx.warning('w1');
        ctx.progress({ activity: 'a', percentComplete: 50 });
        yield 2;
        ctx.information('i1');
        ctx.debug('d1');
        return 'last';
      },
    });
    expect(await job.outcome).toEqual({ state: 'Completed' });
    expect(job.records.map((r) => [r.stream, r.data])).toEqual([
      ['verbose', 'v1'],
      ['output', 1],
      ['warning', 'w1'],
      ['progress', { activity: 'a', percentComplete: 50 }],
      ['output', 2],
      ['information', 'i1'],
      ['debug', 'd1'],
      ['output', 'last'],
    ]);
  });

  it('streams sync generators and treats arrays, Maps and Sets as single values', async () => {
    const gen = start({
      fn: function* () {
        yield* [1, 2, 3];
      },
    });
    await gen.outcome;
    expect(data(gen.records)).toEqual([1, 2, 3]);
    const array = start({ fn: () => [new Map([[1, 2]]), new Set([3])] });
    await array.outcome;
    expect(data(array.records)).toEqual([[new Map([[1, 2]]), new Set([3])]]);
  });

  it('runs eval code as an async generator body with ctx and args', async () => {
    const job = start({
      eval: 'for (const x of args) yield x * 2; ctx.warning("done"); return args.length',
      args: [1, 2],
    });
    expect(await job.outcome).toEqual({ state: 'Completed' });
    expect(job.records.map((r) => [r.stream, r.data])).toEqual([
      ['output', 2],
      ['output', 4],
      ['warning', 'done'],
      ['output', 2],
    ]);
  });

  it('accepts method shorthand source and rejects native functions', async () => {
    const holder = {
      twice(_ctx: unknown, x: number) {
        return x * 2;
      },
    };
    const job = start({ fn: holder.twice, args: [21] });
    await job.outcome;
    expect(data(job.records)).toEqual([42]);
    const native = start({ fn: Math.max as unknown as WorkFunction });
    const outcome = await native.outcome;
    expect(outcome.state).toBe('Failed');
    expect(outcome.state === 'Failed' && outcome.reason.code).toBe('ERR_JOB_START_FAILED');
  });

  it('imports a module and calls the named export', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rjob-runtime-'));
    const file = join(dir, 'work.mjs');
    try {
      writeFileSync(file, 'export async function* count(ctx, n) { for (let i = 0; i < n; i++) yield i; }\n');
      const job = start({ module: file, export: 'count', args: [3] });
      expect(await job.outcome).toEqual({ state: 'Completed' });
      expect(data(job.records)).toEqual([0, 1, 2]);
      const missing = start({ module: file, export: 'nope' });
      const outcome = await missing.outcome;
      expect(outcome.state === 'Failed' && outcome.reason.code).toBe('ERR_JOB_START_FAILED');
      expect(outcome.state === 'Failed' && outcome.reason.message).toMatch(/Export "nope"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('fails with ERR_JOB_THREW and keeps the thrown error as the cause', async () => {
    const job = start({
      fn: (ctx: any) => {
        ctx.write('before');
        throw Object.assign(new RangeError('bad input'), { code: 'E_MINE' });
      },
    });
    const outcome = await job.outcome;
    expect(data(job.records)).toEqual(['before']);
    if (outcome.state !== 'Failed') throw new Error('expected a failure');
    expect(outcome.reason.code).toBe('ERR_JOB_THREW');
    expect(outcome.reason.message).toBe('bad input');
    const cause = outcome.reason.cause as RjobError;
    expect(cause.name).toBe('RangeError');
    expect(cause.code).toBe('E_MINE');
    expect(cause.stack).toContain('bad input');
  });

  it('sends Error values on the error stream with their code', async () => {
    const job = start({ fn: (ctx: any) => ctx.error(Object.assign(new Error('soft'), { code: 'E_SOFT' })) });
    await job.outcome;
    const [error] = data(job.records, 'error');
    expect(RjobError.hasCode(error, 'E_SOFT')).toBe(true);
    expect((error as Error).message).toBe('soft');
  });

  it('keeps structured-clone fidelity', async () => {
    const job = start({
      fn: () => ({
        date: new Date(0),
        map: new Map<unknown, unknown>([['k', { deep: [1n] }]]),
        set: new Set(['a']),
        big: 2n ** 70n,
        bytes: new Uint8Array([1, 2, 3]),
        floats: new Float64Array([0.5]),
        error: new TypeError('t'),
        nested: { a: [{ b: null, c: undefined }] },
      }),
    });
    await job.outcome;
    const [value] = data(job.records) as any[];
    expect(value.date).toEqual(new Date(0));
    expect(value.map.get('k')).toEqual({ deep: [1n] });
    expect(value.set).toEqual(new Set(['a']));
    expect(value.big).toBe(2n ** 70n);
    expect(value.bytes).toEqual(new Uint8Array([1, 2, 3]));
    expect(value.floats).toEqual(new Float64Array([0.5]));
    expect(value.error).toBeInstanceOf(TypeError);
    expect(value.error.message).toBe('t');
    expect(value.nested).toEqual({ a: [{ b: null, c: undefined }] });
  });

  it('replaces a record that cannot be cloned by a coded error record and goes on', async () => {
    const job = start({
      fn: function* () {
        yield 1;
        yield { ok: true, handler: function onData() {} };
        yield Symbol('s');
        yield 2;
      },
    });
    expect(await job.outcome).toEqual({ state: 'Completed' });
    expect(job.records.map((r) => r.stream)).toEqual(['output', 'error', 'error', 'output']);
    const [fnError, symbolError] = data(job.records, 'error') as RjobError[];
    expect(RjobError.hasCode(fnError, 'ERR_VALUE_NOT_CLONEABLE')).toBe(true);
    expect(fnError?.message).toMatch(/value\.handler is a function \(onData\)/);
    expect(RjobError.hasCode(symbolError, 'ERR_VALUE_NOT_CLONEABLE')).toBe(true);
    expect(symbolError?.message).toMatch(/a symbol/);
  });

  it('refuses args that cannot be cloned before anything starts', () => {
    expect(() => toWorkSpec({ fn: () => 1, args: [{ cb: () => 1 }] })).toThrowError(
      expect.objectContaining({
        code: 'ERR_VALUE_NOT_CLONEABLE',
        message: expect.stringMatching(/\[0\]\.cb/),
      }),
    );
  });

  it('stops pulling from a generator while the host is paused, then finishes after resume', async () => {
    const key = `__rjobPulled${nextRunId}`;
    const g = globalThis as Record<string, unknown>;
    g[key] = 0;
    const job = start(
      {
        fn: `function* (ctx, key, n) { for (let i = 0; i < n; i++) { globalThis[key]++; yield 'x'.repeat(100) + i; } }`,
        args: [key, 20_000],
      },
      { creditBytes: 4096 },
    );
    const session = job.session;
    session.run.pause?.();
    // Whatever the timing, a paused host lets at most one overdrawn batch through.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const pulledWhilePaused = g[key] as number;
    expect(pulledWhilePaused).toBeLessThan(2000);
    expect(job.records.length).toBeLessThan(2000);
    session.run.resume?.();
    expect(await job.outcome).toEqual({ state: 'Completed' });
    expect(job.records).toHaveLength(20_000);
    expect(job.records[19_999]?.data).toBe(`${'x'.repeat(100)}19999`);
    delete g[key];
  });

  it('stops cooperatively: aborts ctx.signal and returns the generator', async () => {
    const job = start({
      fn: async function* (ctx: any) {
        try {
          for (let i = 0; ; i++) {
            yield i;
            await new Promise((resolve) => setTimeout(resolve, 1));
          }
        } finally {
          ctx.information(`cleaned up, aborted=${ctx.signal.aborted}`);
        }
      },
    });
    await new Promise<void>((resolve) => {
      job.state.onEmit = () => resolve();
    });
    await job.session.stop();
    expect(await job.outcome).toEqual({ state: 'Stopped' });
    expect(data(job.records, 'information')).toEqual(['cleaned up, aborted=true']);
    expect(job.kills).toHaveLength(0);
  });

  it('kills after the grace period when the work ignores the stop', async () => {
    const job = start({ fn: () => new Promise(() => {}) }, { stopGraceMs: 5 });
    await job.session.stop();
    expect(await job.outcome).toEqual({ state: 'Stopped' });
    expect(job.kills).toHaveLength(1);
  });

  it('fails with ERR_JOB_TIMEOUT after timeoutMs', async () => {
    const job = start({ fn: () => new Promise(() => {}) }, { timeoutMs: 5, stopGraceMs: 5 });
    const outcome = await job.outcome;
    if (outcome.state !== 'Failed') throw new Error('expected a failure');
    expect(outcome.reason.code).toBe('ERR_JOB_TIMEOUT');
    expect(outcome.reason.timedOut).toBe(true);
  });

  it('reports a lost executor with the reason given, once', async () => {
    const job = start({ fn: () => new Promise(() => {}) });
    job.session.lost(new RjobError('ERR_JOB_CRASHED', 'gone'));
    job.session.lost(new RjobError('ERR_JOB_CRASHED', 'again'));
    const outcome = await job.outcome;
    expect(outcome.state === 'Failed' && outcome.reason.message).toBe('gone');
    expect(job.state.finished).toBe(1);
  });
});

describe('work runner in a node child (child-entry.js)', () => {
  it('runs one piece of work over IPC and exits once it is done', async () => {
    const child = spawn(process.execPath, [CHILD_ENTRY_PATH], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      serialization: 'advanced',
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const channel = channelFromChild(child);
    const fake = fakeContext();
    const session = new WorkSession({
      channel,
      context: fake.context,
      spec: toWorkSpec({
        fn: async function* (ctx: any, when: Date) {
          ctx.verbose(process.pid);
          yield new Map([['when', when]]);
          yield Buffer.from('bytes');
        },
        args: [new Date(5)],
      }),
      runId: 1,
      executor: 'child process',
      kill: () => {
        child.kill('SIGKILL');
      },
    });
    channel.on((message) => session.receive(message));
    expect(await fake.outcome).toEqual({ state: 'Completed' });
    expect(await exited).toBe(0);
    expect(data(fake.records, 'verbose')).toEqual([child.pid]);
    const [map, bytes] = data(fake.records) as [Map<string, Date>, Buffer];
    expect(map.get('when')).toEqual(new Date(5));
    expect(Buffer.isBuffer(bytes) && bytes.toString()).toBe('bytes');
  });
});
