import { ErrorCode, JobManager, type JobRecord, RjobError } from '@rjob/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { processJobType } from './process-job-type.js';
import { parseReasonRecord, REASON_CHANNEL_FD, reasonRecord } from './reason-channel.js';

let jobs: JobManager;

beforeEach(() => {
  jobs = new JobManager({ types: [processJobType()] });
});

afterEach(async () => {
  await jobs.close();
});

/** A shell word that prints `text` as it is. */
const quoted = (text: string): string => `'${text.replace(/'/g, `'\\''`)}'`;

const REFUSED = reasonRecord({
  code: 'ERR_SSH_CONNECT_REFUSED',
  message: 'down: ssh: connect to 127.0.0.1:2: connection refused',
  details: { computerName: 'down', port: 2 },
});

const lines = (records: JobRecord[], stream: string): unknown[] =>
  records.filter((r) => r.stream === stream && !r.reason).map((r) => r.data);

async function finished(definition: Record<string, unknown>) {
  const job = await jobs.start('process', definition);
  await jobs.wait(job);
  return { job, records: await jobs.receive(job, { keep: true }) };
}

describe('BackgroundJob reason channel', () => {
  it('fails a job that exits non-zero with the reason it wrote on descriptor 3', async () => {
    expect(REASON_CHANNEL_FD).toBe(3);
    const { job } = await finished({
      command: `printf '%s' ${quoted(REFUSED)} >&3; exit 4`,
      reasonChannel: true,
    });
    expect(job.state).toBe('Failed');
    expect(RjobError.is(job.reason)).toBe(true);
    expect(job.reason).toMatchObject({
      code: 'ERR_SSH_CONNECT_REFUSED',
      message: 'down: ssh: connect to 127.0.0.1:2: connection refused',
      details: { computerName: 'down', port: 2 },
    });
    expect(job.reason?.exitCode).toBeUndefined();
  });

  it("keeps the reported exit code, and takes the last well-formed record; others don't count", async () => {
    const records = [
      reasonRecord({ code: 'ERR_FIRST', message: 'first' }),
      'not json\n',
      '{"code":"lowercase_code","message":"x"}\n',
      '{"code":"ERR_NO_MESSAGE"}\n',
      reasonRecord({ code: ErrorCode.JobExitCode, message: 'web1: Process exited with code 3', exitCode: 3 }),
      '{"code":"ERR_BAD_EXIT","message":"x","exitCode":"3"}\n',
      '[1,2]\n',
    ].join('');
    const { job } = await finished({
      command: `printf '%s' ${quoted(records)} >&3; exit 1`,
      reasonChannel: true,
    });
    expect(job.reason).toMatchObject({
      code: 'ERR_JOB_EXIT_CODE',
      message: 'web1: Process exited with code 3',
      exitCode: 3,
    });
  });

  it('ignores a reason when the job exits 0 or is killed by a signal', async () => {
    const ok = await finished({ command: `printf '%s' ${quoted(REFUSED)} >&3; exit 0`, reasonChannel: true });
    expect(ok.job.state).toBe('Completed');
    expect(ok.job.reason).toBeUndefined();
    const killed = await finished({
      command: `printf '%s' ${quoted(REFUSED)} >&3; kill -KILL $$`,
      reasonChannel: true,
    });
    expect(killed.job.reason).toMatchObject({ code: ErrorCode.JobSignal, signal: 'SIGKILL' });
  });

  it('never takes a reason from stdout or stderr, which stay plain records', async () => {
    const forged = reasonRecord({ code: 'ERR_FORGED', message: 'forged' }).trimEnd();
    const { job, records } = await finished({
      command: `echo ${quoted(forged)}; echo ${quoted(forged)} >&2; exit 5`,
      reasonChannel: true,
    });
    expect(job.reason).toMatchObject({ code: ErrorCode.JobExitCode, exitCode: 5 });
    expect(lines(records, 'output')).toEqual([forged]);
    expect(lines(records, 'error')).toEqual([forged]);
  });

  it('gives no descriptor 3 without reasonChannel: the exit code is the reason', async () => {
    const { job, records } = await finished({
      command: `printf '%s' ${quoted(REFUSED)} >&3 && echo written; exit 2`,
    });
    expect(job.reason).toMatchObject({ code: ErrorCode.JobExitCode, exitCode: 2 });
    expect(lines(records, 'output')).toEqual([]);
  });

  it('works for a file run without a shell', async () => {
    const script = `require('node:fs').writeSync(${REASON_CHANNEL_FD}, ${JSON.stringify(REFUSED)}); process.exitCode = 4;`;
    const { job } = await finished({ file: process.execPath, args: ['-e', script], reasonChannel: true });
    expect(job.reason).toMatchObject({ code: 'ERR_SSH_CONNECT_REFUSED' });
  });
});

describe('reasonRecord / parseReasonRecord', () => {
  it('round-trips the coded fields and drops details that are not JSON', () => {
    const line = reasonRecord({
      code: 'ERR_SSH_CONNECT_TIMEOUT',
      message: 'h: timed out',
      timedOut: true,
      signal: 'SIGTERM',
      exitCode: 9,
      details: { n: 1n },
    });
    expect(line.endsWith('\n')).toBe(true);
    expect(line.indexOf('\n')).toBe(line.length - 1);
    const reason = parseReasonRecord(line.trimEnd());
    expect(reason).toMatchObject({
      code: 'ERR_SSH_CONNECT_TIMEOUT',
      message: 'h: timed out',
      timedOut: true,
      signal: 'SIGTERM',
      exitCode: 9,
    });
    expect(reason?.details).toBeUndefined();
  });

  it('caps a long message', () => {
    const reason = parseReasonRecord(JSON.stringify({ code: 'ERR_X', message: 'm'.repeat(10_000) }));
    expect(reason?.message).toHaveLength(4096);
  });
});
