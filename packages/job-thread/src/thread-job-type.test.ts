import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Job, JobManager, type JobRecord, RjobError } from '@rjob/core';
import { afterAll, describe, expect, it } from 'vitest';
import { type ThreadJobType, threadJobType } from './index.js';

const thread = threadJobType({ throttleLimit: 4, stopGraceMs: 200 });
const jobs = new JobManager({ types: [thread] });
afterAll(() => jobs.close());

const outputs = (records: JobRecord[]) => records.filter((r) => r.stream === 'output').map((r) => r.data);

/** Work that runs until stopped, cooperatively. */
const untilStopped = (ctx: { signal: AbortSignal }) =>
  new Promise<string>((resolve) => ctx.signal.addEventListener('abort', () => resolve('stopped')));

function reasonOf(job: Job): RjobError {
  if (!job.reason) throw new Error(`job ${job.id} has no reason (state ${job.state})`);
  return job.reason;
}

describe('ThreadJob through the JobManager', () => {
  it('goes NotStarted → Running → Completed, stamping begin and end times once', async () => {
    const job = await jobs.start('thread', { fn: (_ctx: unknown, x: number) => x * 2, args: [21] });
    const states: string[] = [];
    job.onStateChange(({ state }) => states.push(state));
    await jobs.wait(job);
    expect(job.state).toBe('Completed');
    expect(job.type).toBe('ThreadJob');
    const begin = job.beginTime;
    const end = job.endTime;
    expect(begin).toBeInstanceOf(Date);
    expect(end!.getTime()).toBeGreaterThanOrEqual(begin!.getTime());
    expect(outputs(await jobs.receive(job))).toEqual([42]);
    expect(job.beginTime).toBe(begin);
    expect(job.endTime).toBe(end);
    // Running may already have happened inside start(); what follows is only the end.
    expect(states.filter((s) => s !== 'Running')).toEqual(['Completed']);
    expect(job.hasMoreData).toBe(false);
  });

  it('keeps record order across all seven streams', async () => {
    const job = await jobs.start('thread', {
      fn: async function* (ctx: any) {
        ctx.verbose('v');
        yield 'o1';
        ctx.error('e');
        ctx.warning('w');
        ctx.debug('d');
        ctx.information('i');
        ctx.progress({ activity: 'copy', percentComplete: 10 });
        yield 'o2';
      },
    });
    const records = await jobs.receive(job, { wait: true });
    expect(records.map((r) => [r.stream, r.data])).toEqual([
      ['verbose', 'v'],
      ['output', 'o1'],
      ['error', 'e'],
      ['warning', 'w'],
      ['debug', 'd'],
      ['information', 'i'],
      ['progress', { activity: 'copy', percentComplete: 10 }],
      ['output', 'o2'],
    ]);
    expect(records.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it('receives with keep, consumes without it, and autoRemoves after a wait', async () => {
    const job = await jobs.start('thread', { eval: 'yield 1; yield 2' });
    await jobs.wait(job);
    expect(outputs(await jobs.receive(job, { keep: true }))).toEqual([1, 2]);
    expect(job.hasMoreData).toBe(true);
    expect(outputs(await jobs.receive(job))).toEqual([1, 2]);
    expect(await jobs.receive(job)).toEqual([]);
    expect(job.hasMoreData).toBe(false);

    const other = await jobs.start('thread', { eval: 'yield "x"' }, { name: 'auto-removed' });
    expect(outputs(await jobs.receive(other, { wait: true, autoRemove: true }))).toEqual(['x']);
    expect(jobs.get({ names: ['auto-removed'] })).toEqual([]);
  });

  it('waits for any job, and a wait that times out returns nothing', async () => {
    const slow = await jobs.start('thread', { fn: untilStopped });
    const quick = await jobs.start('thread', { fn: () => 'done' });
    expect(await jobs.wait([slow, quick], { any: true })).toEqual([quick]);
    expect(await jobs.wait(slow, { timeoutMs: 20 })).toEqual([]);
    expect(slow.state).toBe('Running');
    await jobs.stop(slow);
    expect(slow.state).toBe('Stopped');
  });

  it('refuses to remove a running job unless forced', async () => {
    const job = await jobs.start('thread', { fn: untilStopped }, { name: 'busy-one' });
    await expect(jobs.remove(job)).rejects.toMatchObject({ code: 'ERR_JOB_RUNNING' });
    expect(job.state).toBe('Running');
    await jobs.remove(job, { force: true });
    expect(job.state).toBe('Stopped');
    expect(jobs.get({ names: ['busy-one'] })).toEqual([]);
  });

  it('stops cooperatively: the work sees ctx.signal and its finally blocks run', async () => {
    const job = await jobs.start('thread', {
      fn: async function* (ctx: any) {
        try {
          for (let i = 0; ; i++) {
            yield i;
            await new Promise((resolve) => setTimeout(resolve, 5));
          }
        } finally {
          ctx.information(`cleanup, aborted=${ctx.signal.aborted}`);
        }
      },
    });
    for await (const record of jobs.receiveStream(job, { keep: true })) {
      if (record.stream === 'output') break;
    }
    await jobs.stop(job);
    expect(job.state).toBe('Stopped');
    const records = await jobs.receive(job);
    expect(records.filter((r) => r.stream === 'information').map((r) => r.data)).toEqual([
      'cleanup, aborted=true',
    ]);
  });

  it('forces a busy loop down after the grace period, and the pool carries on', async () => {
    const job = await jobs.start('thread', { fn: 'function () { while (true) {} }' });
    expect(job.state).toBe('Running');
    await jobs.stop(job);
    expect(job.state).toBe('Stopped');
    const after = await jobs.start('thread', { fn: () => 'still here' });
    expect(outputs(await jobs.receive(after, { wait: true }))).toEqual(['still here']);
  });

  it('fails a throwing job and a crashing job alone while another completes', async () => {
    const survivor = await jobs.start('thread', {
      fn: async function* () {
        yield 'started';
        await new Promise((resolve) => setTimeout(resolve, 100));
        yield 'finished';
      },
    });
    const thrower = await jobs.start('thread', {
      fn: () => {
        throw Object.assign(new TypeError('nope'), { code: 'E_USER' });
      },
    });
    const exiter = await jobs.start('thread', { fn: 'function () { process.exit(3) }' });
    const timerThrow = await jobs.start('thread', {
      fn: 'function () { setTimeout(() => { throw new Error("boom in a timer") }); return new Promise(() => {}) }',
    });
    await jobs.wait([survivor, thrower, exiter, timerThrow]);

    expect(survivor.state).toBe('Completed');
    expect(outputs(await jobs.receive(survivor))).toEqual(['started', 'finished']);

    expect(thrower.state).toBe('Failed');
    expect(reasonOf(thrower).code).toBe('ERR_JOB_THREW');
    expect((reasonOf(thrower).cause as RjobError).code).toBe('E_USER');
    const failedRecords = await jobs.receive(thrower);
    expect(failedRecords.at(-1)).toMatchObject({ stream: 'error', reason: true });
    // The reason is reported on every receive.
    expect((await jobs.receive(thrower)).at(-1)).toMatchObject({ stream: 'error', reason: true });

    expect(exiter.state).toBe('Failed');
    expect(reasonOf(exiter).code).toBe('ERR_JOB_CRASHED');
    expect(reasonOf(exiter).exitCode).toBe(3);

    expect(timerThrow.state).toBe('Failed');
    expect(reasonOf(timerThrow).code).toBe('ERR_JOB_CRASHED');
    expect(reasonOf(timerThrow).message).toContain('boom in a timer');
  });

  it('carries values across the thread boundary with structured-clone fidelity', async () => {
    const input = {
      date: new Date(86_400_000),
      map: new Map<unknown, unknown>([[1, { nested: new Set([1n]) }]]),
      big: 12345678901234567890n,
      bytes: new Uint16Array([1, 65535]),
      buffer: Buffer.from('hi'),
      deep: { a: [{ b: { c: [null, undefined, 'x'] } }] },
    };
    const job = await jobs.start('thread', {
      fn: (_ctx: unknown, value: any) => ({
        ...value,
        error: new RangeError('r', { cause: new Error('c') }),
      }),
      args: [input],
    });
    const [value] = outputs(await jobs.receive(job, { wait: true })) as any[];
    expect(value.date).toEqual(input.date);
    expect(value.map).toEqual(input.map);
    expect(value.big).toBe(input.big);
    expect(value.bytes).toEqual(input.bytes);
    expect(Buffer.isBuffer(value.buffer) && value.buffer.toString()).toBe('hi');
    expect(value.deep).toEqual(input.deep);
    expect(value.error).toBeInstanceOf(RangeError);
    expect(value.error.message).toBe('r');
    expect(value.error.cause.message).toBe('c');
  });

  it('turns functions and symbols into coded errors instead of crashing', async () => {
    const job = await jobs.start('thread', {
      fn: function* () {
        yield 'ok';
        yield { callback: () => 1 };
        yield Symbol('s');
        yield 'still ok';
      },
    });
    const records = await jobs.receive(job, { wait: true });
    expect(job.state).toBe('Completed');
    expect(records.map((r) => r.stream)).toEqual(['output', 'error', 'error', 'output']);
    for (const record of records.filter((r) => r.stream === 'error')) {
      expect(RjobError.hasCode(record.data, 'ERR_VALUE_NOT_CLONEABLE')).toBe(true);
    }
    expect((records[1]!.data as Error).message).toMatch(/value\.callback is a function/);

    const badArgs = await jobs.start('thread', { fn: () => 1, args: [() => 2] });
    await jobs.wait(badArgs);
    expect(badArgs.state).toBe('Failed');
    expect(reasonOf(badArgs).code).toBe('ERR_VALUE_NOT_CLONEABLE');
  });

  it('streams generator records to receiveStream while the job still runs', async () => {
    const job = await jobs.start('thread', {
      fn: async function* (ctx: any) {
        yield 'early';
        await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve));
      },
    });
    const seen: unknown[] = [];
    for await (const record of jobs.receiveStream(job)) {
      seen.push(record.data);
      expect(job.state).toBe('Running');
      void jobs.stop(job);
    }
    expect(seen).toEqual(['early']);
    expect(job.state).toBe('Stopped');
  });

  it('fails a job that runs past its timeoutMs', async () => {
    const job = await jobs.start('thread', { fn: 'function () { while (true) {} }', timeoutMs: 30 });
    await jobs.wait(job);
    expect(job.state).toBe('Failed');
    expect(reasonOf(job).code).toBe('ERR_JOB_TIMEOUT');
    expect(reasonOf(job).timedOut).toBe(true);
  });

  it('fails a job that exceeds its memory limit, and replaces the worker', async () => {
    const job = await jobs.start('thread', {
      fn: 'function () { const hog = []; for (;;) hog.push(new Array(100000).fill({ x: Math.random() })); }',
      maxOldGenerationSizeMb: 16,
    });
    await jobs.wait(job);
    expect(job.state).toBe('Failed');
    expect(reasonOf(job).code).toBe('ERR_JOB_OUT_OF_MEMORY');
    const after = await jobs.start('thread', { fn: () => 'alive' });
    expect(outputs(await jobs.receive(after, { wait: true }))).toEqual(['alive']);
  });

  it('runs eval definitions and modules', async () => {
    const job = await jobs.start('thread', {
      eval: 'for (let i = 0; i < 3; i++) yield i * args[0]',
      args: [10],
    });
    expect(job.command).toBe('for (let i = 0; i < 3; i++) yield i * args[0]');
    expect(outputs(await jobs.receive(job, { wait: true }))).toEqual([0, 10, 20]);

    const dir = mkdtempSync(join(tmpdir(), 'rjob-thread-'));
    const file = join(dir, 'greet.mjs');
    writeFileSync(
      file,
      'export function greet(ctx, name) { ctx.verbose("greeting"); return "hello " + name; }\n',
    );
    const mod = await jobs.start('thread', { module: file, export: 'greet', args: ['world'] });
    expect(mod.command).toBe(`${file}#greet`);
    expect(outputs(await jobs.receive(mod, { wait: true }))).toEqual(['hello world']);
    rmSync(dir, { recursive: true, force: true });

    const broken = await jobs.start('thread', { eval: 'yield (' });
    await jobs.wait(broken);
    expect(reasonOf(broken).code).toBe('ERR_JOB_START_FAILED');
  });
});

describe('ThreadJob throttling', () => {
  it('keeps jobs beyond the throttle limit NotStarted until a worker is free', async () => {
    const single: ThreadJobType = threadJobType({ throttleLimit: 1 });
    const manager = new JobManager({ types: [single] });
    try {
      const first = await manager.start('thread', { fn: untilStopped });
      const second = await manager.start('thread', { fn: () => 'second' });
      const third = await manager.start('thread', { fn: () => 'third' });
      expect(first.state).toBe('Running');
      expect(second.state).toBe('NotStarted');
      expect(second.beginTime).toBeUndefined();
      expect(single.stats()).toMatchObject({ busy: 1, queued: 2 });

      // A queued job can be stopped without ever running.
      await manager.stop(third);
      expect(third.state).toBe('Stopped');

      await manager.stop(first);
      expect(outputs(await manager.receive(second, { wait: true }))).toEqual(['second']);
      expect(second.state).toBe('Completed');
      expect(second.beginTime!.getTime()).toBeGreaterThanOrEqual(first.endTime!.getTime());
      expect(single.stats()).toMatchObject({ busy: 0, queued: 0 });
    } finally {
      await manager.close();
    }
    expect(single.stats().workers).toBe(0);
  });

  it('pauses a fast producer while nobody receives, so the buffer stays bounded', async () => {
    const maxBufferedBytes = 256 * 1024;
    const manager = new JobManager({ types: [threadJobType({ minWarmWorkers: 0 })], maxBufferedBytes });
    try {
      const count = 200_000;
      const job = await manager.start('thread', {
        fn: 'function* (ctx, n) { for (let i = 0; i < n; i++) yield "x".repeat(100) + i }',
        args: [count],
      });
      await new Promise((resolve) => setTimeout(resolve, 300));
      // The bound: the manager's high-water mark, plus the runtime's 1 MiB credit window, plus one
      // batch (512 records) of overdraft. It holds at any moment, however slow the machine.
      const bound = maxBufferedBytes + 1024 * 1024 + 512 * 200;
      expect(job.buffer.bytes).toBeLessThan(bound);
      expect(job.state).toBe('Running');
      let received = 0;
      let inOrder = true;
      for await (const record of manager.receiveStream(job)) {
        if (record.data !== `${'x'.repeat(100)}${received}`) inOrder = false;
        received++;
        if (job.buffer.bytes >= bound) inOrder = false;
      }
      expect(received).toBe(count);
      expect(inOrder).toBe(true);
      expect(job.state).toBe('Completed');
    } finally {
      await manager.close();
    }
  });

  it('does not keep the process alive once its jobs are done', () => {
    const entry = join(dirname(fileURLToPath(import.meta.url)), 'index.ts');
    const script = `
      import { JobManager } from '@rjob/core';
      import { threadJobType } from ${JSON.stringify(entry)};
      const jobs = new JobManager({ types: [threadJobType({ minWarmWorkers: 2 })] });
      const job = await jobs.start('thread', { fn: () => 'from a worker' });
      const records = await jobs.receive(job, { wait: true });
      console.log(records[0].data);
      // No close(): idle workers must not hold the event loop.
    `;
    const result = spawnSync(
      process.execPath,
      ['--conditions=@rjob/source', '--import', 'tsx', '--input-type=module', '-e', script],
      {
        cwd: dirname(fileURLToPath(import.meta.url)),
        encoding: 'utf8',
        timeout: 30_000,
      },
    );
    expect(result.signal).toBeNull();
    expect(result.stderr).toBe('');
    expect(result.stdout.trim()).toBe('from a worker');
    expect(result.status).toBe(0);
  });
});
