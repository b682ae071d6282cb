import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { deserializeError, type JobRecord, RjobError, serializeError } from '@rjob/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readRecords } from '../fixtures/spool-records.js';
import { incidents } from '../incidents.js';
import { isSpoolGapRecord, RecordSpool } from '../spool/record-spool.js';
import { ensureStateDir, resolveStateDir } from '../state-dir.js';
import { JobStore, type StoredJob, type StoredSession } from './job-store.js';

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rjob-store-'));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function session(overrides: Partial<StoredSession> = {}): StoredSession {
  return {
    sessionId: 'session-1',
    identity: 'alice',
    resumeSecretHash: new Uint8Array(32).fill(1),
    workingDirectory: '/home/alice',
    env: { PATH: '/usr/bin' },
    createdAt: new Date(1_700_000_000_000),
    lastSeenAt: new Date(1_700_000_500_000),
    ...overrides,
  };
}

function job(store: JobStore, overrides: Partial<StoredJob> = {}): StoredJob {
  const instanceId = overrides.instanceId ?? 'instance-1';
  return {
    sessionId: 'session-1',
    id: 1,
    instanceId,
    name: 'Job1',
    type: 'ThreadJob',
    command: 'work',
    location: 'localhost',
    state: 'Completed',
    beginTime: new Date(1_700_000_000_000),
    endTime: new Date(1_700_000_001_000),
    childIds: [],
    spoolDir: store.spoolDir('session-1', instanceId),
    ...overrides,
  };
}

async function readAll(spool: RecordSpool): Promise<JobRecord[]> {
  const out: JobRecord[] = [];
  for (let next = 1; ; ) {
    const batch = await readRecords(spool, next);
    if (batch.length === 0) return out;
    out.push(...batch);
    next = batch.at(-1)!.seq + 1;
  }
}

describe('JobStore', () => {
  it('round-trips sessions and jobs with Date, Map, BigInt data and errors', async () => {
    const store = await JobStore.open({ dir });
    await store.saveSession(session({ data: { tags: new Map([['a', 1n]]) } }));
    const reason = serializeError(new RjobError('ERR_JOB_EXIT_CODE', 'exit 3', { exitCode: 3 }));
    const stored = job(store, {
      state: 'Failed',
      reason,
      data: { when: new Date(5), sizes: new Map([['x', 2n ** 64n]]), error: new Error('inner') },
    });
    await store.saveJob(stored);

    const snapshot = await (await JobStore.open({ dir })).load();
    expect(snapshot.skipped).toEqual([]);
    expect(snapshot.sessions).toEqual([session({ data: { tags: new Map([['a', 1n]]) } })]);
    expect(snapshot.jobs).toHaveLength(1);
    const loaded = snapshot.jobs[0]!;
    expect(loaded).toEqual(stored);
    expect(loaded.spoolDir).toBe(store.spoolDir('session-1', 'instance-1'));
    const revived = deserializeError(loaded.reason!);
    expect(RjobError.hasCode(revived, 'ERR_JOB_EXIT_CODE') && revived.exitCode).toBe(3);
    expect((loaded.data as { error: Error }).error).toBeInstanceOf(Error);
  });

  it('never stores a resume secret in clear, and refuses unsafe ids', async () => {
    const store = await JobStore.open({ dir });
    await expect(
      store.saveSession({ ...session(), resumeSecret: 'hunter2' } as StoredSession),
    ).rejects.toMatchObject({
      code: 'ERR_INVALID_ARGUMENT',
    });
    expect(() => store.jobDir('session-1', '../escape')).toThrow(RjobError);
    expect(() => store.sessionDir('a/b')).toThrow(RjobError);
  });

  it('brings unfinished jobs back Failed "agent restarted", and keeps finished ones', async () => {
    const store = await JobStore.open({ dir });
    await store.saveSession(session());
    for (const [id, state] of [
      [1, 'Completed'],
      [2, 'NotStarted'],
      [3, 'Running'],
      [4, 'Stopping'],
      [5, 'Disconnected'],
      [6, 'Stopped'],
    ] as const) {
      await store.saveJob(job(store, { id, instanceId: `i-${id}`, state, endTime: undefined }));
    }
    const snapshot = await (await JobStore.open({ dir })).load();
    const states = snapshot.jobs.map((j) => [j.id, j.state, j.reason?.code]);
    expect(states).toEqual([
      [1, 'Completed', undefined],
      [2, 'Failed', 'ERR_AGENT_RESTARTED'],
      [3, 'Failed', 'ERR_AGENT_RESTARTED'],
      [4, 'Failed', 'ERR_AGENT_RESTARTED'],
      [5, 'Failed', 'ERR_AGENT_RESTARTED'],
      [6, 'Stopped', undefined],
    ]);
    expect(snapshot.failedOnRestart.map((j) => j.id)).toEqual([2, 3, 4, 5]);
    expect(snapshot.jobs[1]!.reason!.message).toBe('agent restarted');
    expect(snapshot.jobs[1]!.endTime).toBeInstanceOf(Date);
    // Persisted: a second restart finds them Failed already.
    const again = await (await JobStore.open({ dir })).load();
    expect(again.failedOnRestart).toEqual([]);
    expect(again.jobs[2]!.state).toBe('Failed');
  });

  it('removes a job with its spool, and a session with everything in it', async () => {
    const store = await JobStore.open({ dir });
    await store.saveSession(session());
    const stored = job(store);
    await store.saveJob(stored);
    const spool = await RecordSpool.open({ dir: stored.spoolDir! });
    await spool.append({ stream: 'output', data: 1, seq: 1, timeMs: 0, jobId: 1, location: 'localhost' });
    await spool.close();
    await store.saveJob(job(store, { id: 2, instanceId: 'instance-2' }));

    await store.removeJob('session-1', 'instance-1');
    await expect(stat(store.jobDir('session-1', 'instance-1'))).rejects.toMatchObject({ code: 'ENOENT' });
    expect((await store.load()).jobs.map((j) => j.id)).toEqual([2]);

    await store.removeSession('session-1');
    expect(await readdir(join(dir, 'sessions'))).toEqual([]);
  });

  it('reports a damaged file instead of loading it, and ignores leftover temp files', async () => {
    const store = await JobStore.open({ dir });
    await store.saveJob(job(store));
    await store.saveJob(job(store, { id: 2, instanceId: 'instance-2' }));
    await writeFile(join(store.jobDir('session-1', 'instance-2'), 'job.bin'), 'garbage');
    await writeFile(join(store.jobDir('session-1', 'instance-1'), 'job.bin.tmp-1-abcd'), 'half');
    const snapshot = await store.load();
    expect(snapshot.jobs.map((j) => j.id)).toEqual([1]);
    expect(snapshot.skipped).toHaveLength(1);
    expect(snapshot.skipped[0]!.error.code).toBe('ERR_STORE_CORRUPT');
    expect(await readdir(store.jobDir('session-1', 'instance-1'))).not.toContain('job.bin.tmp-1-abcd');
  });

  it('reports a damaged job file as an incident and keeps the other jobs', async () => {
    const store = await JobStore.open({ dir });
    await store.saveSession(session());
    await store.saveJob(job(store));
    await store.saveJob(job(store, { id: 2, instanceId: 'instance-2' }));
    const damaged = join(store.jobDir('session-1', 'instance-2'), 'job.bin');
    await writeFile(damaged, '');
    const before = incidents().length;
    const snapshot = await (await JobStore.open({ dir })).load();
    expect(snapshot.jobs.map((j) => j.id)).toEqual([1]);
    expect(incidents().slice(before)).toEqual([
      expect.objectContaining({ kind: 'damaged', code: 'ERR_STATE_DAMAGED', subject: `job file ${damaged}` }),
    ]);
  });

  it.each([
    ['empty', Buffer.alloc(0)],
    ['garbled', Buffer.from('RJS1\x00\x00\x00\x00not a value')],
  ])(
    'brings a session with an %s session.bin back from its key file, with all its jobs',
    async (_, bytes) => {
      const store = await JobStore.open({ dir });
      await store.saveSession(session({ name: 'keep' }));
      await store.saveJob(job(store));
      await store.saveJob(job(store, { id: 2, instanceId: 'instance-2' }));
      const sessionFile = join(store.sessionDir('session-1'), 'session.bin');
      await writeFile(sessionFile, bytes);
      const before = incidents().length;
      const snapshot = await (await JobStore.open({ dir })).load();
      const { lastSeenAt: _seen, ...lasting } = session({ name: 'keep' });
      expect(snapshot.sessions).toEqual([expect.objectContaining(lasting)]);
      expect(snapshot.recoveredSessions).toEqual(['session-1']);
      expect(snapshot.jobs.map((j) => j.id)).toEqual([1, 2]);
      expect(incidents().slice(before)).toEqual([
        expect.objectContaining({
          kind: 'damaged',
          code: 'ERR_STATE_DAMAGED',
          subject: `session file ${sessionFile}`,
        }),
      ]);
      // Rewritten whole: the next agent reads it again.
      const again = await (await JobStore.open({ dir })).load();
      expect(again.recoveredSessions).toEqual([]);
      expect(again.sessions).toEqual([expect.objectContaining(lasting)]);
    },
  );

  it('reports precisely a session whose session.bin and key file are both damaged', async () => {
    const store = await JobStore.open({ dir });
    await store.saveSession(session());
    await store.saveJob(job(store));
    await writeFile(join(store.sessionDir('session-1'), 'session.bin'), '');
    await writeFile(join(store.sessionDir('session-1'), 'session.key'), 'x');
    const before = incidents().length;
    const snapshot = await (await JobStore.open({ dir })).load();
    expect(snapshot.sessions).toEqual([]);
    const reported = incidents().slice(before);
    expect(reported.map((incident) => incident.subject)).toEqual([
      `session key file ${join(store.sessionDir('session-1'), 'session.key')}`,
      `session file ${join(store.sessionDir('session-1'), 'session.bin')}`,
    ]);
    expect(reported[1]!.detail).toContain('1 job(s) are kept on disk');
  });

  it('recovers a consistent prefix after the agent is SIGKILLed mid-stream', async () => {
    const fixture = fileURLToPath(new URL('../fixtures/spool-crash-writer.ts', import.meta.url));
    const child = spawn(process.execPath, ['--conditions=@rjob/source', '--import', 'tsx', fixture, dir], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      child.on('exit', (_code, signal) => resolve(signal)),
    );
    let flushed = 0;
    for await (const line of createInterface({ input: child.stdout! })) {
      flushed = Number(line.split(' ')[1]);
      // Past a few store updates, acks and many segment rotations.
      if (flushed >= 3000) {
        child.kill('SIGKILL');
        break;
      }
    }
    expect(await exited).toBe('SIGKILL');

    const store = await JobStore.open({ dir });
    const snapshot = await store.load();
    expect(snapshot.skipped).toEqual([]);
    expect(snapshot.sessions.map((s) => s.identity)).toEqual(['tester']);
    const [finished, running] = snapshot.jobs;
    expect(finished!.state).toBe('Completed');
    expect(running!.state).toBe('Failed');
    expect(running!.reason).toMatchObject({ code: 'ERR_AGENT_RESTARTED', message: 'agent restarted' });

    const finishedSpool = await RecordSpool.open({ dir: finished!.spoolDir! });
    expect(finishedSpool.sealed).toBe(true);
    expect((await readAll(finishedSpool)).map((r) => (r.data as { i: number }).i)).toEqual(
      Array.from({ length: 50 }, (_, i) => i + 1),
    );
    await finishedSpool.close();

    const spool = await RecordSpool.open({ dir: running!.spoolDir!, segmentBytes: 4096 });
    const records = await readAll(spool);
    expect(records.some(isSpoolGapRecord)).toBe(false);
    // Everything reported flushed survived; what is there runs without gaps or duplicates from
    // the first unacknowledged record to the last complete one.
    expect(spool.lastSeq).toBeGreaterThanOrEqual(flushed);
    expect(records[0]!.seq).toBe(spool.ackedSeq + 1);
    expect(records.map((r) => r.seq)).toEqual(
      Array.from({ length: spool.lastSeq - spool.ackedSeq }, (_, i) => spool.ackedSeq + 1 + i),
    );
    expect(records.every((r) => (r.data as { i: number }).i === r.seq)).toBe(true);
    // And the spool takes appends again.
    const next = spool.lastSeq + 1;
    expect(await spool.append({ ...records.at(-1)!, seq: next })).toBe(next);
    await spool.close();
  });
});

describe('state directory', () => {
  it('resolves RJOB_STATE_DIR, then XDG_STATE_HOME, then ~/.local/state', () => {
    expect(resolveStateDir({ RJOB_STATE_DIR: '/x/state', XDG_STATE_HOME: '/y' })).toBe('/x/state');
    expect(resolveStateDir({ XDG_STATE_HOME: '/y' })).toBe('/y/rjob');
    expect(resolveStateDir({ XDG_STATE_HOME: 'relative' })).toMatch(/\.local\/state\/rjob$/);
  });

  it('creates it 0700 and tightens an existing one', async () => {
    const state = join(dir, 'a', 'rjob');
    await ensureStateDir(state);
    expect((await stat(state)).mode & 0o777).toBe(0o700);
    const { chmod } = await import('node:fs/promises');
    await chmod(state, 0o755);
    await ensureStateDir(state);
    expect((await stat(state)).mode & 0o777).toBe(0o700);
  });
});
