import { ErrorCode, JobManager, type JobRecord } from '@rjob/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { processJobType } from './process-job-type.js';

let jobs: JobManager;

beforeEach(() => {
  jobs = new JobManager({ types: [processJobType()] });
});

afterEach(async () => {
  await jobs.close();
});

const output = (records: JobRecord[]) =>
  records.filter((r) => r.stream === 'output' && !r.reason).map((r) => r.data);

describe('stdinOpen', () => {
  it('keeps stdin a pipe that writeInput feeds, after input, until end closes it', async () => {
    const job = await jobs.start('process', { command: 'cat', stdinOpen: true, input: 'first\n' });
    await jobs.writeInput(job, 'second\n');
    await jobs.writeInput(job, new TextEncoder().encode('third\n'), { end: true });
    expect(output(await jobs.receive(job, { wait: true }))).toEqual(['first', 'second', 'third']);
    expect(job.state).toBe('Completed');
  });

  it('refuses input to a closed stdin, a job without one and a finished job', async () => {
    const open = await jobs.start('process', { file: 'sh', args: ['-c', 'cat; sleep 30'], stdinOpen: true });
    await jobs.writeInput(open, undefined, { end: true });
    await expect(jobs.writeInput(open, 'late')).rejects.toMatchObject({ code: ErrorCode.StdinClosed });

    const none = await jobs.start('process', { command: 'sleep 30' });
    await expect(jobs.writeInput(none, 'x')).rejects.toMatchObject({ code: ErrorCode.StdinClosed });

    const done = await jobs.start('process', { command: 'true', stdinOpen: true });
    await jobs.wait(done);
    await expect(jobs.writeInput(done, 'x')).rejects.toMatchObject({ code: ErrorCode.JobNotRunning });
    await jobs.stop([open, none]);
  });
});
