import { ErrorCode, JobManager, type JobRecord, RjobError } from '@rjob/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { processJobType } from './process-job-type.js';
import { eventually, isAlive, killAll } from './test-utils.js';

const WORK_MODULE = new URL('./fixtures/work-module.js', import.meta.url).pathname;

let jobs: JobManager;
const started = new Set<number>();
beforeEach(() => {
  jobs = new JobManager({ types: [processJobType()] });
});
afterEach(async () => {
  await jobs.close();
  killAll(started);
  started.clear();
});

const outputs = (records: JobRecord[]) => records.filter((r) => r.stream === 'output').map((r) => r.data);

describe('BackgroundJob node-child mode', () => {
  it('carries Date, Map, Set, BigInt, typed arrays, Error and nested objects both ways', async () => {
    const values = [
      new Date('2024-01-02T03:04:05.678Z'),
      new Map<unknown, unknown>([
        ['a', 1],
        [2, { b: [3n] }],
      ]),
      new Set(['x', 'y']),
      2n ** 70n,
      new Uint8Array([1, 2, 255]),
      new Float64Array([0.5, -1]),
      Object.assign(new RangeError('out of range'), { code: 'E_RANGE' }),
      { nested: { deep: { list: [1, 'two', null, undefined], when: new Date(0) } } },
    ];
    const job = await jobs.start('process', {
      fn: async function* (_ctx: unknown, ...args: unknown[]) {
        yield* args;
      },
      args: values,
    });
    const received = outputs(await jobs.receive(job, { wait: true }));
    expect(job.state).toBe('Completed');
    expect(received).toHaveLength(values.length);
    const [date, map, set, big, bytes, floats, error, nested] = received as [
      Date,
      Map<unknown, unknown>,
      Set<string>,
      bigint,
      Uint8Array,
      Float64Array,
      RangeError,
      unknown,
    ];
    expect(date).toBeInstanceOf(Date);
    expect(date.toISOString()).toBe('2024-01-02T03:04:05.678Z');
    expect(map).toBeInstanceOf(Map);
    expect(map.get(2)).toEqual({ b: [3n] });
    expect(set).toEqual(new Set(['x', 'y']));
    expect(big).toBe(2n ** 70n);
    expect(bytes).toBeInstanceOf(Uint8Array);
    expect([...bytes]).toEqual([1, 2, 255]);
    expect(floats).toBeInstanceOf(Float64Array);
    expect([...floats]).toEqual([0.5, -1]);
    expect(error).toBeInstanceOf(Error);
    expect(error.message).toBe('out of range');
    expect(nested).toEqual(values[7]);
  });

  it('replaces a function or symbol record with a coded error and goes on', async () => {
    const job = await jobs.start('process', {
      fn: (ctx: { write(v: unknown): void }) => {
        ctx.write('before');
        ctx.write({ callback: () => 1 });
        ctx.write(Symbol('s'));
        ctx.write('after');
      },
    });
    const records = await jobs.receive(job, { wait: true });
    expect(job.state).toBe('Completed');
    expect(outputs(records)).toEqual(['before', 'after']);
    const errors = records.filter((r) => r.stream === 'error').map((r) => r.data as RjobError);
    expect(errors).toHaveLength(2);
    for (const error of errors) expect(RjobError.hasCode(error, ErrorCode.ValueNotCloneable)).toBe(true);
    expect(errors[0]!.message).toMatch(/value\.callback is a function/);
    expect(errors[1]!.message).toMatch(/a symbol/);
  });

  it('fails with ERR_VALUE_NOT_CLONEABLE when args hold a function', async () => {
    const job = await jobs.start('process', { fn: () => 1, args: [{ f: () => 2 }] });
    await jobs.wait(job);
    expect(job.state).toBe('Failed');
    expect(job.reason!.code).toBe(ErrorCode.ValueNotCloneable);
  });

  it('fails with ERR_JOB_THREW, keeping the thrown error as the cause', async () => {
    const job = await jobs.start('process', {
      fn: () => {
        throw Object.assign(new TypeError('bad input'), { code: 'E_BAD' });
      },
    });
    await jobs.wait(job);
    expect(job.state).toBe('Failed');
    expect(job.reason!.code).toBe(ErrorCode.JobThrew);
    expect(job.reason!.message).toBe('bad input');
    expect((job.reason!.cause as Error).name).toBe('TypeError');
  });

  it('turns what the work prints into records, and keeps its lines even when done comes first', async () => {
    const job = await jobs.start('process', {
      fn: () => {
        console.log('printed');
        console.error('complained');
        return 'returned';
      },
    });
    const records = await jobs.receive(job, { wait: true });
    expect(job.state).toBe('Completed');
    expect(outputs(records).sort()).toEqual(['printed', 'returned']);
    expect(records.filter((r) => r.stream === 'error').map((r) => r.data)).toEqual(['complained']);
  });

  it('runs a module export, in cwd and env, and a default export streaming values', async () => {
    const greet = await jobs.start('process', {
      module: WORK_MODULE,
      export: 'greet',
      args: ['world'],
      cwd: '/tmp',
      env: { RJOB_TEST_VAR: 'set' },
    });
    expect(outputs(await jobs.receive(greet, { wait: true }))).toEqual([
      'hello world',
      { cwd: '/tmp', env: 'set' },
    ]);
    const count = await jobs.start('process', { module: WORK_MODULE, args: [5] });
    expect(outputs(await jobs.receive(count, { wait: true }))).toEqual([0, 1, 2, 3, 4]);
    expect(count.command).toBe(WORK_MODULE);
  });

  it('evaluates source as an async generator body with ctx and args', async () => {
    const job = await jobs.start('process', {
      eval: 'yield args[0] * 2; yield typeof ctx.write',
      args: [21],
    });
    expect(outputs(await jobs.receive(job, { wait: true }))).toEqual([42, 'function']);
  });

  it('streams many records in order', async () => {
    const job = await jobs.start('process', {
      fn: async function* (_ctx: unknown, n: number) {
        for (let i = 0; i < n; i++) yield i;
      },
      args: [100_000],
    });
    const received = outputs(await jobs.receive(job, { wait: true })) as number[];
    expect(received).toHaveLength(100_000);
    expect(received.every((value, index) => value === index)).toBe(true);
  });

  it('fails with ERR_JOB_START_FAILED when the module cannot be loaded', async () => {
    const job = await jobs.start('process', { module: '/nonexistent/work.js' });
    await jobs.wait(job);
    expect(job.state).toBe('Failed');
    expect(job.reason!.code).toBe(ErrorCode.JobStartFailed);
  });

  it('fails with ERR_JOB_EXIT_CODE when the work exits the process', async () => {
    const job = await jobs.start('process', { fn: () => process.exit(4) });
    await jobs.wait(job);
    expect(job.state).toBe('Failed');
    expect(job.reason!.code).toBe(ErrorCode.JobExitCode);
    expect(job.reason!.exitCode).toBe(4);
  });

  it('stops work that ignores its signal by killing the child after stopGraceMs', async () => {
    const job = await jobs.start('process', {
      fn: async (ctx: { write(v: unknown): void }) => {
        ctx.write(process.pid);
        await new Promise(() => setInterval(() => {}, 1000));
      },
      stopGraceMs: 300,
    });
    let pid = 0;
    for await (const record of jobs.receiveStream(job, { keep: true })) {
      pid = record.data as number;
      break;
    }
    started.add(pid);
    await jobs.stop(job);
    expect(job.state).toBe('Stopped');
    await eventually(() => !isAlive(pid), 'the node child to die');
  });

  it('stops cooperative work through ctx.signal', async () => {
    const job = await jobs.start('process', {
      fn: async (ctx: { write(v: unknown): void; signal: AbortSignal }) => {
        ctx.write('started');
        await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve));
        ctx.write('cleaned up');
      },
    });
    for await (const _ of jobs.receiveStream(job, { keep: true })) break;
    await jobs.stop(job);
    expect(job.state).toBe('Stopped');
    expect(outputs(await jobs.receive(job))).toEqual(['started', 'cleaned up']);
  });
});
