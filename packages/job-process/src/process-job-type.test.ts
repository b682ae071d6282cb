import { mkdtempSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, type Job, JobManager, type JobRecord, type JobStateChange, RjobError } from '@rjob/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { processJobType } from './process-job-type.js';
import { eventually, groupMembers, isAlive, killAll, watchdogPids } from './test-utils.js';

let jobs: JobManager;
/** Pids a test learnt about; killed after it, whatever happened. */
const started = new Set<number>();

beforeEach(() => {
  jobs = new JobManager({ types: [processJobType({ maxLineChars: 1000 })] });
});

afterEach(async () => {
  await jobs.close();
  killAll(started);
  started.clear();
});

const data = (records: JobRecord[], stream = 'output') =>
  records.filter((r) => r.stream === stream && !r.reason).map((r) => r.data);

/** The first output line of a running job, read without consuming it. */
async function firstLine(job: Job): Promise<string> {
  for await (const record of jobs.receiveStream(job, { keep: true })) {
    if (record.stream === 'output') return String(record.data);
  }
  throw new Error(`job ${job.id} ended without output`);
}

describe('BackgroundJob states and streams', () => {
  it('runs Running → Completed, stamping begin and end times once', async () => {
    const job = await jobs.start('process', { command: 'echo hello' });
    const changes: JobStateChange[] = [];
    job.onStateChange((change) => changes.push(change));
    expect(job.type).toBe('BackgroundJob');
    expect(job.command).toBe('echo hello');
    expect(job.state).toBe('Running');
    const begin = job.beginTime;
    expect(begin).toBeInstanceOf(Date);

    await jobs.wait(job);
    expect(job.state).toBe('Completed');
    expect(changes.map((c) => c.state)).toEqual(['Completed']);
    expect(job.endTime!.getTime()).toBeGreaterThanOrEqual(begin!.getTime());
    const end = job.endTime;
    expect(data(await jobs.receive(job))).toEqual(['hello']);
    expect(job.beginTime).toBe(begin);
    expect(job.endTime).toBe(end);
    expect(job.hasMoreData).toBe(false);
  });

  it('is found by its name, BackgroundJob, and its alias, process', async () => {
    const a = await jobs.start('BackgroundJob', { command: 'true' });
    const b = await jobs.start('process', { file: 'true' });
    await jobs.wait([a, b]);
    expect(jobs.get({ type: 'process' })).toEqual([a, b]);
  });

  it('turns stdout lines into output records and stderr lines into error records, in order', async () => {
    // The sleeps let the owner read each pipe before the other is written: two pipes have no
    // order between them except the order in which the owner reads them.
    const job = await jobs.start('process', {
      command: 'echo o1; echo o2; sleep 0.3; echo e1 >&2; echo e2 >&2; sleep 0.3; echo o3',
    });
    const records = await jobs.receive(job, { wait: true });
    expect(records.map((r) => [r.stream, r.data])).toEqual([
      ['output', 'o1'],
      ['output', 'o2'],
      ['error', 'e1'],
      ['error', 'e2'],
      ['output', 'o3'],
    ]);
    expect(records.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(job.state).toBe('Completed');
  });

  it('strips \\r, flushes a last line without newline, and decodes UTF-8 split across writes', async () => {
    // € is e2 82 ac; the sleep makes its bytes arrive in two reads.
    const job = await jobs.start('process', {
      command: `printf 'crlf\\r\\n\\342\\202'; sleep 0.2; printf '\\254 euro\\n\\nlast'`,
    });
    expect(data(await jobs.receive(job, { wait: true }))).toEqual(['crlf', '€ euro', '', 'last']);
  });

  it('splits a line longer than maxLineChars into records of that length', async () => {
    const job = await jobs.start('process', {
      command: `head -c 2500 /dev/zero | tr '\\0' x; echo; echo short`,
    });
    const lines = data(await jobs.receive(job, { wait: true })) as string[];
    expect(lines.map((l) => l.length)).toEqual([1000, 1000, 500, 5]);
  });

  it('fails with ERR_JOB_EXIT_CODE and the exit code, reported on every receive', async () => {
    const job = await jobs.start('process', { command: 'echo partial; exit 3' });
    await jobs.wait(job);
    expect(job.state).toBe('Failed');
    expect(RjobError.hasCode(job.reason, ErrorCode.JobExitCode)).toBe(true);
    expect(job.reason!.exitCode).toBe(3);
    expect(job.reason!.message).toBe('Process exited with code 3');

    const first = await jobs.receive(job);
    expect(data(first)).toEqual(['partial']);
    const reason = first.at(-1)!;
    expect(reason.reason).toBe(true);
    expect(reason.stream).toBe('error');
    expect((reason.data as RjobError).exitCode).toBe(3);
    const second = await jobs.receive(job);
    expect(second).toHaveLength(1);
    expect((second[0]!.data as RjobError).code).toBe(ErrorCode.JobExitCode);
  });

  it('fails with ERR_JOB_SIGNAL when killed by a signal nobody asked for', async () => {
    const job = await jobs.start('process', { command: 'kill -USR1 $$' });
    await jobs.wait(job);
    expect(job.state).toBe('Failed');
    expect(job.reason!.code).toBe(ErrorCode.JobSignal);
    expect(job.reason!.signal).toBe('SIGUSR1');
    expect(job.reason!.message).toBe('Process was killed by signal SIGUSR1');
  });

  it('fails a job alone while another one completes', async () => {
    const bad = await jobs.start('process', { command: 'echo bad >&2; exit 7' });
    const good = await jobs.start('process', { command: 'sleep 0.2; echo good' });
    await jobs.wait([bad, good]);
    expect(bad.state).toBe('Failed');
    expect(bad.reason!.exitCode).toBe(7);
    expect(good.state).toBe('Completed');
    expect(data(await jobs.receive(good))).toEqual(['good']);
  });
});

describe('BackgroundJob definitions', () => {
  let dir: string;
  beforeEach(() => {
    dir = realpathSync(mkdtempSync(join(tmpdir(), 'rjob-process-')));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('runs in cwd', async () => {
    const job = await jobs.start('process', { command: 'pwd', cwd: dir });
    expect(data(await jobs.receive(job, { wait: true }))).toEqual([dir]);
  });

  it('merges env over process.env, or replaces it with replaceEnv', async () => {
    const merged = await jobs.start('process', {
      command: 'test -n "$PATH" && echo "$RJOB_TEST_VAR:has-path"',
      env: { RJOB_TEST_VAR: 'x' },
    });
    expect(data(await jobs.receive(merged, { wait: true }))).toEqual(['x:has-path']);
    const replaced = await jobs.start('process', {
      file: '/usr/bin/env',
      env: { ONLY: '1' },
      replaceEnv: true,
    });
    expect(data(await jobs.receive(replaced, { wait: true }))).toEqual(['ONLY=1']);
  });

  it('writes input to stdin and closes it; stdin is not connected otherwise', async () => {
    const text = await jobs.start('process', { command: 'cat; echo end', input: 'line 1\nline 2\n' });
    expect(data(await jobs.receive(text, { wait: true }))).toEqual(['line 1', 'line 2', 'end']);
    const bytes = await jobs.start('process', { file: 'wc', args: ['-c'], input: new Uint8Array(1234) });
    expect(data(await jobs.receive(bytes, { wait: true }))).toEqual(['1234']);
    const none = await jobs.start('process', { command: 'cat; echo eof' });
    expect(data(await jobs.receive(none, { wait: true }))).toEqual(['eof']);
  });

  it('runs a file with an argument vector and no shell', async () => {
    const job = await jobs.start('process', { file: 'printf', args: ['%s|', 'a b', '$HOME', "it's"] });
    expect(job.command).toBe(`printf '%s|' 'a b' '$HOME' 'it'\\''s'`);
    expect(data(await jobs.receive(job, { wait: true }))).toEqual(["a b|$HOME|it's|"]);
  });

  it('uses the shell given', async () => {
    const job = await jobs.start('process', { command: 'echo "$0"', shell: '/bin/bash' });
    expect(data(await jobs.receive(job, { wait: true }))).toEqual(['/bin/bash']);
  });

  it('fails with ERR_JOB_START_FAILED when the file or the cwd does not exist', async () => {
    const missing = await jobs.start('process', { file: join(dir, 'no-such-program') });
    const badCwd = await jobs.start('process', { command: 'true', cwd: join(dir, 'no-such-dir') });
    await jobs.wait([missing, badCwd]);
    for (const job of [missing, badCwd]) {
      expect(job.state).toBe('Failed');
      expect(job.reason!.code).toBe(ErrorCode.JobStartFailed);
      expect(job.reason!.message).toMatch(/^Could not start .*ENOENT/);
    }
  });

  it('refuses a definition with nothing to run', async () => {
    const job = await jobs.start('process', { nothing: true } as never);
    await jobs.wait(job);
    expect(job.state).toBe('Failed');
    expect(job.reason!.code).toBe(ErrorCode.InvalidArgument);
  });
});

describe('BackgroundJob stop, timeout and process groups', () => {
  it('stops `sleep 1000` by ending its process group', async () => {
    const job = await jobs.start('process', { command: 'echo $$; sleep 1000 & sleep 1000' });
    const pgid = Number(await firstLine(job));
    started.add(pgid);
    await eventually(() => groupMembers(pgid).length === 3, 'shell and two sleeps');
    const members = groupMembers(pgid);
    for (const pid of members) started.add(pid);

    await jobs.stop(job);
    expect(job.state).toBe('Stopped');
    expect(job.reason).toBeUndefined();
    await eventually(() => members.every((pid) => !isAlive(pid)), 'the whole group to be gone');
  });

  it('forces a shell that ignores SIGTERM with SIGKILL after stopGraceMs', async () => {
    const job = await jobs.start('process', {
      command: `trap '' TERM; echo $$; while :; do sleep 0.05; done`,
      stopGraceMs: 300,
    });
    const pgid = Number(await firstLine(job));
    started.add(pgid);
    await jobs.stop(job);
    expect(job.state).toBe('Stopped');
    await eventually(() => !isAlive(pgid) && groupMembers(pgid).length === 0, 'the trapping shell to die');
  });

  it('fails with ERR_JOB_TIMEOUT once timeoutMs has passed', async () => {
    const job = await jobs.start('process', { command: 'echo $$; exec sleep 1000', timeoutMs: 200 });
    started.add(Number(await firstLine(job)));
    await jobs.wait(job);
    expect(job.state).toBe('Failed');
    expect(job.reason!.code).toBe(ErrorCode.JobTimeout);
    expect(job.reason!.timedOut).toBe(true);
  });

  it('kills what the job left running in its group when it ends', async () => {
    const job = await jobs.start('process', { command: 'sleep 1000 >/dev/null 2>&1 & echo $!' });
    const records = await jobs.receive(job, { wait: true });
    const leftover = Number(data(records)[0]);
    started.add(leftover);
    expect(job.state).toBe('Completed');
    await eventually(() => !isAlive(leftover), 'the background sleep to be killed');
  });

  it('runs each job as the leader of its own process group and session', async () => {
    const job = await jobs.start('process', { command: 'echo $$; ps -o pgid= -o sid= -p $$' });
    const [pid, ids] = data(await jobs.receive(job, { wait: true })) as string[];
    expect(ids!.trim().split(/\s+/)).toEqual([pid, pid]);
  });

  it('ends its watchdog on close', async () => {
    const job = await jobs.start('process', { command: 'true' });
    await jobs.wait(job);
    const watchdogs = watchdogPids;
    expect(watchdogs()).toHaveLength(1);
    await jobs.close();
    expect(watchdogs()).toHaveLength(0);
  });
});
