import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCode, RjobError } from '../errors.js';
import { type InlineJobApi, inlineJobType } from '../testing/inline-job-type.js';
import type { Job, JobStateChange } from './job.js';
import { JobManager } from './job-manager.js';

/** A latch a test opens to let inline work go on. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, opened };
}

let jobs: JobManager;
afterEach(async () => {
  await jobs?.close();
});

function manager(options: ConstructorParameters<typeof JobManager>[0] = {}) {
  jobs = new JobManager({ types: [inlineJobType()], ...options });
  return jobs;
}

describe('JobManager: states and times', () => {
  it('goes NotStarted → Running → Completed, stamping begin and end once', async () => {
    const m = manager();
    const g = gate();
    const changes: JobStateChange[] = [];
    const job = await m.start('inline', {
      deferRunning: true,
      run: async (api: InlineJobApi) => {
        await g.opened;
        api.running();
        api.emit('output', 'x');
      },
    });
    job.onStateChange((change) => changes.push(change));
    expect(job.state).toBe('NotStarted');
    expect(job.beginTime).toBeUndefined();
    g.open();
    await m.wait(job);
    expect(changes.map((c) => c.state)).toEqual(['Running', 'Completed']);
    expect(job.beginTime).toBeInstanceOf(Date);
    expect(job.endTime!.getTime()).toBeGreaterThanOrEqual(job.beginTime!.getTime());
    const { beginTime, endTime } = job;
    expect(() => job.setState('Running')).toThrowError(
      expect.objectContaining({ code: ErrorCode.InvalidStateTransition }),
    );
    expect(job.beginTime).toBe(beginTime);
    expect(job.endTime).toBe(endTime);
    expect(job.state).toBe('Completed');
  });

  it('names jobs Job<id> by default and records type, command and location', async () => {
    const m = manager();
    const a = await m.start('inline', { run: () => {}, command: 'do a' });
    const b = await m.start('InlineJob', { run: () => {} }, { name: 'bee' });
    expect(a.name).toBe(`Job${a.id}`);
    expect(b.id).toBe(a.id + 1);
    expect(b.name).toBe('bee');
    expect(a.type).toBe('InlineJob');
    expect(a.command).toBe('do a');
    expect(a.location).toBe('localhost');
    expect(a.instanceId).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('fails a throwing job with a coded reason, reported on every receive', async () => {
    const m = manager();
    const job = await m.start('inline', {
      run: (api: InlineJobApi) => {
        api.emit('output', 'before');
        throw new Error('kaput');
      },
    });
    await m.wait(job);
    expect(job.state).toBe('Failed');
    expect(job.reason?.code).toBe(ErrorCode.JobThrew);
    const first = await m.receive(job);
    expect(first.map((r) => r.data)).toEqual(['before', job.reason]);
    expect(first[1]).toMatchObject({ stream: 'error', reason: true });
    const second = await m.receive(job);
    expect(second).toHaveLength(1);
    expect(second[0]).toMatchObject({ stream: 'error', reason: true, data: job.reason });
  });

  it('an unknown job type is a coded error and creates no job', async () => {
    const m = manager();
    await expect(m.start('nope', {})).rejects.toMatchObject({ code: ErrorCode.UnknownJobType });
    expect(m.get()).toEqual([]);
  });
});

describe('JobManager: streams and receive', () => {
  it('keeps emission order across all seven streams', async () => {
    const m = manager();
    const streams = ['output', 'error', 'warning', 'verbose', 'debug', 'information', 'progress'] as const;
    const job = await m.start('inline', {
      run: (api: InlineJobApi) => {
        for (let i = 0; i < 70; i++) api.emit(streams[i % 7]!, i);
      },
    });
    await m.wait(job);
    const records = await m.receive(job);
    expect(records.map((r) => r.data)).toEqual([...Array(70).keys()]);
    expect(records.map((r) => r.seq)).toEqual([...Array(70).keys()].map((i) => i + 1));
    expect(records.map((r) => r.stream)).toEqual([...Array(70).keys()].map((i) => streams[i % 7]));
  });

  it('receive consumes; keep leaves records; hasMoreData follows', async () => {
    const m = manager();
    const job = await m.start('inline', {
      run: (api: InlineJobApi) => {
        api.emit('output', 1);
        api.emit('output', 2);
      },
    });
    await m.wait(job);
    expect(job.hasMoreData).toBe(true);
    expect((await m.receive(job, { keep: true })).map((r) => r.data)).toEqual([1, 2]);
    expect((await m.receive(job, { keep: true })).map((r) => r.data)).toEqual([1, 2]);
    expect(job.hasMoreData).toBe(true);
    expect((await m.receive(job)).map((r) => r.data)).toEqual([1, 2]);
    expect(await m.receive(job)).toEqual([]);
    expect(job.hasMoreData).toBe(false);
  });

  it('hasMoreData is true for a running job with nothing buffered', async () => {
    const m = manager();
    const g = gate();
    const job = await m.start('inline', { run: () => g.opened });
    expect(job.hasMoreData).toBe(true);
    g.open();
    await m.wait(job);
    expect(job.hasMoreData).toBe(false);
  });

  it('receive with wait returns everything once the job finished, and autoRemove removes it', async () => {
    const m = manager();
    const g = gate();
    const job = await m.start('inline', {
      run: async (api: InlineJobApi) => {
        api.emit('output', 'a');
        await g.opened;
        api.emit('output', 'b');
      },
    });
    const received = m.receive(job, { wait: true, autoRemove: true });
    g.open();
    expect((await received).map((r) => r.data)).toEqual(['a', 'b']);
    expect(m.get()).toEqual([]);
    expect(() => m.job(job.id)).toThrowError(expect.objectContaining({ code: ErrorCode.JobNotFound }));
  });

  it('autoRemove without wait is refused', async () => {
    const m = manager();
    const job = await m.start('inline', { run: () => {} });
    await expect(m.receive(job, { autoRemove: true })).rejects.toMatchObject({
      code: ErrorCode.InvalidArgument,
    });
  });

  it('receiveStream yields records while the job still runs', async () => {
    const m = manager();
    const g = gate();
    const job = await m.start('inline', {
      run: async (api: InlineJobApi) => {
        api.emit('output', 'early');
        await g.opened;
        api.emit('output', 'late');
      },
    });
    const seen: unknown[] = [];
    for await (const record of m.receiveStream(job)) {
      seen.push(record.data);
      if (record.data === 'early') {
        expect(job.state).toBe('Running');
        g.open();
      }
    }
    expect(seen).toEqual(['early', 'late']);
    expect(job.hasMoreData).toBe(false);
  });

  it('receiveStream with keep leaves the records for the next receiver', async () => {
    const m = manager();
    const job = await m.start('inline', {
      run: (api: InlineJobApi) => {
        for (let i = 0; i < 5; i++) api.emit('output', i);
      },
    });
    const kept: unknown[] = [];
    for await (const record of m.receiveStream(job, { keep: true })) kept.push(record.data);
    expect(kept).toEqual([0, 1, 2, 3, 4]);
    expect((await m.receive(job)).map((r) => r.data)).toEqual([0, 1, 2, 3, 4]);
  });
});

describe('JobManager: wait', () => {
  it('waits for all, or returns the first with any', async () => {
    const m = manager();
    const g1 = gate();
    const g2 = gate();
    const a = await m.start('inline', { run: () => g1.opened });
    const b = await m.start('inline', { run: () => g2.opened });
    const any = m.wait([a, b], { any: true });
    g2.open();
    expect(await any).toEqual([b]);
    expect(a.state).toBe('Running');
    const all = m.wait([a, b]);
    g1.open();
    expect(await all).toEqual([a, b]);
  });

  it('a timeout returns nothing and is not an error', async () => {
    const m = manager();
    const g = gate();
    const job = await m.start('inline', { run: () => g.opened });
    expect(await m.wait(job, { timeoutMs: 20 })).toEqual([]);
    expect(job.state).toBe('Running');
    g.open();
    expect(await m.wait(job, { timeoutMs: 60_000 })).toEqual([job]);
  });
});

describe('JobManager: stop and remove', () => {
  it('stop goes through Stopping to Stopped and aborts the signal', async () => {
    const m = manager();
    let aborted = false;
    const job = await m.start('inline', {
      run: (api: InlineJobApi) =>
        new Promise<void>((resolve) =>
          api.signal.addEventListener('abort', () => {
            aborted = true;
            resolve();
          }),
        ),
    });
    const states: string[] = [];
    job.onStateChange((c) => states.push(c.state));
    await m.stop(job);
    expect(aborted).toBe(true);
    expect(states).toEqual(['Stopping', 'Stopped']);
    expect(job.endTime).toBeInstanceOf(Date);
  });

  it('remove refuses a running job without force and removes nothing', async () => {
    const m = manager();
    const g = gate();
    const done = await m.start('inline', { run: () => {} });
    await m.wait(done);
    const running = await m.start('inline', {
      run: (api: InlineJobApi) => Promise.race([g.opened, aborted(api)]),
    });
    const error = await m.remove([done, running]).catch((e: unknown) => e);
    expect(RjobError.is(error)).toBe(true);
    expect((error as RjobError).code).toBe(ErrorCode.JobRunning);
    expect(m.get().map((j) => j.id)).toEqual([done.id, running.id]);
    await m.remove([done, running], { force: true });
    expect(running.state).toBe('Stopped');
    expect(m.get()).toEqual([]);
  });

  it('unknown ids and names are coded errors; wildcards that match nothing are not', async () => {
    const m = manager();
    const job = await m.start('inline', { run: () => {} }, { name: 'build-1' });
    await expect(m.receive(999)).rejects.toMatchObject({ code: ErrorCode.JobNotFound });
    await expect(m.stop('nope')).rejects.toMatchObject({ code: ErrorCode.JobNotFound });
    expect(() => m.job('999')).toThrowError(expect.objectContaining({ code: ErrorCode.JobNotFound }));
    expect(m.get({ names: ['zzz*'] })).toEqual([]);
    expect(await m.wait('build-*')).toEqual([job]);
    // The failed lookups did not disturb the job.
    expect(job.state).toBe('Completed');
  });
});

describe('JobManager: get', () => {
  it('filters by ids, wildcard names, state, type, command and instance id', async () => {
    const m = manager();
    const g = gate();
    const a = await m.start('inline', { run: () => {}, command: 'echo a' }, { name: 'alpha' });
    const b = await m.start('inline', { run: () => g.opened, command: 'sleep b' }, { name: 'beta' });
    await m.wait(a);
    expect(m.get({ ids: [b.id] })).toEqual([b]);
    expect(m.get({ names: ['AL*'] })).toEqual([a]);
    expect(m.get({ names: ['?eta'] })).toEqual([b]);
    expect(m.get({ state: 'Running' })).toEqual([b]);
    expect(m.get({ state: ['Running', 'Completed'] })).toEqual([a, b]);
    expect(m.get({ type: 'inline' })).toEqual([a, b]);
    expect(m.get({ type: 'ThreadJob' })).toEqual([]);
    expect(m.get({ command: 'sleep*' })).toEqual([b]);
    expect(m.get({ instanceIds: [a.instanceId] })).toEqual([a]);
    g.open();
  });
});

describe('JobManager: parent and child jobs', () => {
  it('a parent completes when every child completes; receive walks the children', async () => {
    const m = manager();
    const parent = m.startGroup({
      name: 'fan',
      command: 'hostname',
      children: ['h1', 'h2', 'h3'].map((host) => ({
        type: 'inline',
        location: host,
        definition: { run: (api: InlineJobApi) => void api.emit('output', `hi from ${host}`) },
      })),
    });
    expect(parent.children).toHaveLength(3);
    expect(parent.location).toBe('h1,h2,h3');
    await m.wait(parent);
    expect(parent.state).toBe('Completed');
    const records = await m.receive(parent);
    expect(records.map((r) => [r.location, r.data])).toEqual([
      ['h1', 'hi from h1'],
      ['h2', 'hi from h2'],
      ['h3', 'hi from h3'],
    ]);
    expect(m.get().map((j) => j.id)).toEqual([parent.id]);
    expect(m.get({ includeChildren: true })).toHaveLength(4);
  });

  it("a child's Type column can be a label instead of its job type's name", async () => {
    const m = manager();
    const parent = m.startGroup({
      type: 'RemoteJob',
      children: [
        { type: 'inline', location: 'h1', typeName: 'RemoteJob', definition: { run: () => {} } },
        { type: 'inline', location: 'h2', definition: { run: () => {} } },
      ],
    });
    await m.wait(parent);
    expect([parent, ...parent.children].map((job) => job.type)).toEqual([
      'RemoteJob',
      'RemoteJob',
      'InlineJob',
    ]);
    // The label is what get's type filter sees, as for the Type column.
    expect(m.get({ type: 'RemoteJob', includeChildren: true })).toEqual([parent, parent.children[0]]);
  });

  it('a parent fails if any child fails, and the other children still deliver', async () => {
    const m = manager();
    const parent = m.startGroup({
      children: [
        {
          type: 'inline',
          location: 'ok',
          definition: { run: (api: InlineJobApi) => void api.emit('output', 'fine') },
        },
        {
          type: 'inline',
          location: 'bad',
          definition: {
            run: () => {
              throw new RjobError('ERR_SSH_UNREACHABLE', 'host unreachable');
            },
          },
        },
      ],
    });
    await m.wait(parent);
    expect(parent.state).toBe('Failed');
    expect(parent.reason?.code).toBe(ErrorCode.ChildJobFailed);
    expect(parent.reason?.message).toContain('bad (host unreachable)');
    const records = await m.receive(parent);
    expect(records.filter((r) => r.stream === 'output').map((r) => r.data)).toEqual(['fine']);
    expect(records.find((r) => r.reason)?.data).toMatchObject({ code: 'ERR_SSH_UNREACHABLE' });
  });

  it('a stopped parent is Stopped, including children that never got their turn', async () => {
    const m = manager();
    const parent = m.startGroup({
      throttleLimit: 1,
      children: [1, 2, 3].map(() => ({
        type: 'inline',
        definition: { run: (api: InlineJobApi) => aborted(api) },
      })),
    });
    expect(parent.children.map((c) => c.state)).toEqual(['Running', 'NotStarted', 'NotStarted']);
    await m.stop(parent);
    expect(parent.state).toBe('Stopped');
    expect(parent.children.map((c) => c.state)).toEqual(['Stopped', 'Stopped', 'Stopped']);
  });

  it('throttles children: at most throttleLimit run at once', async () => {
    const m = manager();
    let running = 0;
    let peak = 0;
    const parent = m.startGroup({
      throttleLimit: 2,
      children: [...Array(6).keys()].map(() => ({
        type: 'inline',
        definition: {
          run: async () => {
            running++;
            peak = Math.max(peak, running);
            await new Promise((resolve) => setImmediate(resolve));
            running--;
          },
        },
      })),
    });
    await m.wait(parent);
    expect(parent.state).toBe('Completed');
    expect(peak).toBe(2);
  });

  it('a child cannot be removed on its own', async () => {
    const m = manager();
    const parent = m.startGroup({ children: [{ type: 'inline', definition: { run: () => {} } }] });
    await m.wait(parent);
    await expect(m.remove(parent.children[0]!)).rejects.toMatchObject({ code: ErrorCode.InvalidArgument });
    await m.remove(parent);
    expect(m.get({ includeChildren: true })).toEqual([]);
  });
});

describe('JobManager: flow control', () => {
  it('pauses a producer above maxBufferedBytes and resumes it as a receiver drains', async () => {
    const m = manager({ maxBufferedBytes: 10_000 });
    let pauses = 0;
    let peakBuffered = 0;
    const holder: { job?: Job } = {};
    const total = 2_000;
    const job = await m.start('inline', {
      run: async (api: InlineJobApi) => {
        // Let start() hand the job to the test before producing.
        await new Promise((resolve) => setImmediate(resolve));
        for (let i = 0; i < total; i++) {
          if (!api.emit('output', i, 100)) {
            pauses++;
            await api.writable();
          }
          peakBuffered = Math.max(peakBuffered, holder.job!.buffer.bytes);
        }
      },
    });
    holder.job = job;
    let count = 0;
    for await (const record of m.receiveStream(job)) {
      expect(record.data).toBe(count++);
    }
    expect(count).toBe(total);
    expect(pauses).toBeGreaterThan(0);
    // One record past the mark is the most a well-behaved producer can overshoot.
    expect(peakBuffered).toBeLessThanOrEqual(10_000 + 100);
  });
});

describe('JobManager: close', () => {
  it('stops running jobs and refuses new ones', async () => {
    const m = manager();
    const job = await m.start('inline', { run: (api: InlineJobApi) => aborted(api) });
    await m.close();
    expect(job.state).toBe('Stopped');
    await expect(m.start('inline', { run: () => {} })).rejects.toMatchObject({
      code: ErrorCode.ManagerClosed,
    });
  });
});

function aborted(api: InlineJobApi): Promise<void> {
  if (api.signal.aborted) return Promise.resolve();
  return new Promise((resolve) => api.signal.addEventListener('abort', () => resolve()));
}

describe('JobManager: restore', () => {
  const done = { run: () => {} };

  it('puts jobs back under their ids and instance ids; later jobs get the ids after them', async () => {
    const m = manager();
    const a = await m.restore('inline', done, { id: 3, instanceId: 'aaaa', name: 'first' });
    const began = new Date('2026-01-02T03:04:05.006Z');
    const ended = new Date('2026-01-02T04:04:05.006Z');
    const b = await m.restore('inline', done, {
      id: 7,
      instanceId: 'bbbb',
      beginTime: began,
      endTime: ended,
    });
    expect([a.id, a.instanceId, a.name]).toEqual([3, 'aaaa', 'first']);
    // Its stored times, not the restore's.
    expect([b.state, b.beginTime, b.endTime]).toEqual(['Completed', began, ended]);
    expect(a.beginTime!.getTime()).toBeGreaterThan(ended.getTime());
    expect([b.id, b.instanceId, b.name]).toEqual([7, 'bbbb', 'Job7']);
    const next = await m.start('inline', done);
    expect(next.id).toBe(8);
    expect(m.get().map((j) => j.id)).toEqual([3, 7, 8]);
    expect(m.job('bbbb')).toBe(b);
  });

  it('refuses an id that was handed out already (ids are never reused), creating no job', async () => {
    const m = manager();
    await m.start('inline', done);
    await m.restore('inline', done, { id: 5, instanceId: 'five' });
    for (const id of [1, 5, 4, 0, 1.5]) {
      const refused = await m.restore('inline', done, { id, instanceId: `x${id}` }).catch((e: unknown) => e);
      expect(RjobError.is(refused) && refused.code).toBe(ErrorCode.InvalidArgument);
    }
    expect(m.get().map((j) => j.id)).toEqual([1, 5]);
    expect((await m.start('inline', done)).id).toBe(6);
  });

  it('restoreGroup gives the parent and each child their ids; the parent follows its children', async () => {
    const m = manager();
    const parent = m.restoreGroup({
      id: 10,
      instanceId: 'parent',
      name: 'fan',
      children: ['h1', 'h2'].map((host) => ({ type: 'inline', location: host, definition: done })),
      childIdentities: [
        { id: 11, instanceId: 'c1' },
        { id: 14, instanceId: 'c2' },
      ],
    });
    expect([parent.id, parent.instanceId]).toEqual([10, 'parent']);
    expect(parent.children.map((c) => [c.id, c.instanceId])).toEqual([
      [11, 'c1'],
      [14, 'c2'],
    ]);
    await m.wait(parent);
    expect(parent.state).toBe('Completed');
    expect((await m.start('inline', done)).id).toBe(15);
    const mismatch = (() => {
      try {
        return m.restoreGroup({
          id: 20,
          instanceId: 'p2',
          children: [{ type: 'inline', definition: done }],
          childIdentities: [],
        });
      } catch (error) {
        return error;
      }
    })();
    expect(RjobError.is(mismatch) && mismatch.code).toBe(ErrorCode.InvalidArgument);
  });
});
