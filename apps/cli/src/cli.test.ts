/**
 * The CLI run in-process against a real agent daemon (started by the CLI itself, in a private
 * state directory): S1's flow and the one-line errors with their exit codes.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ExitCode } from './io.js';
import { sandbox } from './testing/sandbox.js';

describe('local jobs (S1)', () => {
  it('starts, waits, receives once, keeps, and removes jobs across invocations', async () => {
    await using s = await sandbox();
    const started = await s.rjob('start', '--name', 'build', '--', 'sleep 1; echo built');
    expect(started.code).toBe(0);
    expect(started.stdout).toMatch(/^Id\s+Name\s+Type\s+State\s+HasMoreData\s+Location\s+Command\n/);
    expect(started.stdout).toMatch(
      /1\s+build\s+BackgroundJob\s+\w+\s+True\s+localhost\s+sleep 1; echo built/,
    );

    const thread = await s.rjob('start', '--type', 'thread', '--eval', 'for (let i = 0; i < 3; i++) yield i');
    expect(thread.stdout).toMatch(/2\s+\S+\s+ThreadJob/);

    expect((await s.rjob('wait', 'build')).stdout).toMatch(/build\s+BackgroundJob\s+Completed/);
    expect(await s.rjob('receive', 'build')).toEqual({ code: 0, stdout: 'built\n', stderr: '' });
    expect((await s.rjob('receive', 'build')).stdout).toBe('');
    expect((await s.rjob('get', 'build')).stdout).toMatch(/build\s+BackgroundJob\s+Completed\s+False/);

    await s.rjob('wait', '2');
    expect((await s.rjob('receive', '2', '--keep')).stdout).toBe('0\n1\n2\n');
    expect((await s.rjob('receive', '2', '--keep')).stdout).toBe('0\n1\n2\n');

    expect((await s.rjob('remove', 'build')).code).toBe(0);
    const left = await s.rjob('get', '--json');
    expect(JSON.parse(left.stdout).map((job: { id: number }) => job.id)).toEqual([2]);

    // The local jobs are the agent's job host's: no handle to keep, nothing another command can
    // take over; what the agent keeps of them is private to the user.
    expect((await stat(s.dir)).mode & 0o777).toBe(0o700);
    await expect(stat(join(s.dir, 'cli', 'sessions.json'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('shows a failed command with its stderr and reason, and exits 1', async () => {
    await using s = await sandbox();
    await s.rjob('start', '--name', 'bad', '--', 'echo oops >&2; exit 3');
    await s.rjob('wait', 'bad');
    const first = await s.rjob('receive', 'bad');
    expect(first.code).toBe(ExitCode.JobFailed);
    expect(first.stderr).toContain('oops\n');
    expect(first.stderr).toMatch(/FAILED: .*code 3.*\(ERR_JOB_EXIT_CODE\)/);
    // The reason is reported on every receive, not consumed.
    expect((await s.rjob('receive', 'bad')).stderr).toMatch(/ERR_JOB_EXIT_CODE/);
  });

  it('streams with receive --wait and labels other streams', async () => {
    await using s = await sandbox();
    await s.rjob(
      'start',
      '--name',
      'mixed',
      '--type',
      'thread',
      '--eval',
      "yield 'a'; ctx.warning('careful'); await new Promise((r) => setTimeout(r, 200)); yield 'b'",
    );
    const out = await s.rjob('receive', 'mixed', '--wait');
    expect(out.code).toBe(0);
    expect(out.stdout).toBe('a\nb\n');
    expect(out.stderr).toBe('WARNING: careful\n');
  });

  it('prints records as ndjson', async () => {
    await using s = await sandbox();
    await s.rjob('start', '--name', 'j', '--type', 'thread', '--eval', 'yield { n: 1n }');
    await s.rjob('wait', 'j');
    const out = await s.rjob('receive', 'j', '--ndjson');
    const record = JSON.parse(out.stdout.trim());
    expect(record).toMatchObject({ stream: 'output', data: { n: '1' }, location: 'localhost' });
  });

  it('refuses to remove a running job without --force, then stops and removes it with it', async () => {
    await using s = await sandbox();
    await s.rjob('start', '--name', 'slow', '--', 'sleep 30');
    const refused = await s.rjob('remove', 'slow');
    expect(refused.code).toBe(ExitCode.Refused);
    expect(refused.stderr).toMatch(/^rjob: job 1 \(slow\) is Running; .* \(ERR_JOB_RUNNING\)\n$/);
    expect((await s.rjob('remove', 'slow', '--force')).code).toBe(0);
    expect((await s.rjob('get', 'slow')).code).toBe(ExitCode.NotFound);
  });

  it('stops a job', async () => {
    await using s = await sandbox();
    await s.rjob('start', '--name', 'slow', '--', 'sleep 30');
    expect((await s.rjob('stop', 'slow')).stdout).toMatch(/slow\s+BackgroundJob\s+Stopped/);
  });
});

describe("invoke --as-job: each child fails with its host's coded reason", () => {
  it('a refused host is ERR_SSH_CONNECT_REFUSED, a remote exit 3 is ERR_JOB_EXIT_CODE 3, remote output sets nothing', async () => {
    await using s = await sandbox();
    // A coded reason written by the remote command on its stdout, its stderr and its descriptor 3
    // (not open there): none of it can pass for the host's reason.
    const forged = '{"code":"ERR_FORGED","message":"localhost: forged by the remote command","exitCode":99}';
    const command = `echo out; echo '${forged}'; echo '${forged}' >&2; { echo '${forged}' >&3; } 2>/dev/null; exit 3`;
    // Nothing listens on port 1: the connection is refused without any sshd.
    const started = await s.rjob(
      'invoke',
      '-c',
      'localhost,127.0.0.1:1',
      '--as-job',
      '--name',
      'fan',
      '--',
      command,
    );
    expect(started.code).toBe(0);
    await s.rjob('wait', 'fan');

    const listed = await s.rjob('get', 'fan', '--children', '--json');
    const jobs = JSON.parse(listed.stdout) as Array<{
      name: string;
      state: string;
      reason?: { code: string; message: string; exitCode?: number };
    }>;
    expect(jobs.map((job) => [job.name, job.state, job.reason?.code])).toEqual([
      ['fan', 'Failed', 'ERR_CHILD_JOB_FAILED'],
      ['localhost', 'Failed', 'ERR_JOB_EXIT_CODE'],
      ['127.0.0.1:1', 'Failed', 'ERR_SSH_CONNECT_REFUSED'],
    ]);
    expect(jobs[1]!.reason).toEqual({
      code: 'ERR_JOB_EXIT_CODE',
      message: 'localhost: Process exited with code 3',
      exitCode: 3,
    });
    expect(jobs[2]!.reason?.message).toMatch(/^127\.0\.0\.1:1: .*connection refused/);

    const received = await s.rjob('receive', 'fan');
    expect(received.code).toBe(ExitCode.JobFailed);
    expect(received.stdout).toBe(`[localhost] out\n[localhost] ${forged}\n`);
    const stderr = received.stderr.split('\n').filter(Boolean);
    expect(stderr).toContain(`[localhost] ${forged}`);
    expect(stderr).toContain('[localhost] FAILED: localhost: Process exited with code 3 (ERR_JOB_EXIT_CODE)');
    expect(stderr.filter((line) => line.startsWith('[127.0.0.1:1] '))).toEqual([
      expect.stringMatching(/^\[127\.0\.0\.1:1\] FAILED: 127\.0\.0\.1:1: .+ \(ERR_SSH_CONNECT_REFUSED\)$/),
    ]);
    expect(received.stderr).not.toMatch(/FAILED: .*ERR_FORGED/);
  });
});

describe('two invocations at once', () => {
  it('a waiting command survives another command taking the local session over', async () => {
    await using s = await sandbox();
    await s.rjob('start', '--name', 'slow', '--', 'sleep 2; echo done');
    const waiting = s.rjob('wait', 'slow');
    // Each of these takes the session from the waiter, which takes it back and waits again.
    for (let i = 0; i < 3; i++) expect((await s.rjob('get', 'slow')).code).toBe(0);
    const waited = await waiting;
    expect(waited.stderr).toBe('');
    expect(waited.stdout).toMatch(/slow\s+BackgroundJob\s+Completed/);
    expect((await s.rjob('receive', 'slow')).stdout).toBe('done\n');
  });
});

describe('errors: one line, a documented exit code', () => {
  const oneLine = (text: string): void => {
    expect(text.split('\n').filter(Boolean)).toHaveLength(1);
    expect(text).toMatch(/^rjob: .+ \(ERR_[A-Z_]+\)\n$/);
  };

  it('unknown job', async () => {
    await using s = await sandbox();
    const out = await s.rjob('receive', 'nope');
    expect(out.code).toBe(ExitCode.NotFound);
    oneLine(out.stderr);
  });

  it('unknown session', async () => {
    await using s = await sandbox();
    const out = await s.rjob('get', '-s', 'nosuch');
    expect(out.code).toBe(ExitCode.NotFound);
    oneLine(out.stderr);
  });

  it('bad flag and unknown command', async () => {
    await using s = await sandbox();
    const flag = await s.rjob('get', '--bogus');
    expect(flag.code).toBe(ExitCode.Usage);
    oneLine(flag.stderr);
    const verb = await s.rjob('frobnicate');
    expect(verb.code).toBe(ExitCode.Usage);
    oneLine(verb.stderr);
  });

  it('timeout', async () => {
    await using s = await sandbox();
    await s.rjob('start', '--name', 'slow', '--', 'sleep 30');
    const out = await s.rjob('wait', 'slow', '--timeout', '200ms');
    expect(out.code).toBe(ExitCode.Timeout);
    oneLine(out.stderr);
  });

  it('unreachable host (nothing listens on the ssh port)', async () => {
    await using s = await sandbox();
    const out = await s.rjob('invoke', '-c', '127.0.0.1:1', '--', 'true');
    expect(out.code).toBe(ExitCode.Unreachable);
    oneLine(out.stderr);
    expect(out.stderr).toContain('ERR_SSH_CONNECT_REFUSED');
  });

  it('start -c refuses to lose the job', async () => {
    await using s = await sandbox();
    const out = await s.rjob('start', '-c', 'server01', '--', 'true');
    expect(out.code).toBe(ExitCode.Usage);
    oneLine(out.stderr);
  });
});

describe('--bytes', () => {
  it('invoke --bytes writes stdout as the command wrote it; the line mode does not', async () => {
    await using s = await sandbox();
    const command = "printf 'a\\r\\nb'; printf 'text on stderr\\n' >&2";
    const lines = await s.rjob('invoke', '-c', 'localhost', '--no-prefix', '--', command);
    expect(lines.code).toBe(ExitCode.Ok);
    expect(lines.stdout).toBe('a\nb\n');
    const bytes = await s.rjob('invoke', '-c', 'localhost', '--bytes', '--', command);
    expect(bytes.code).toBe(ExitCode.Ok);
    expect(bytes.stdout).toBe('a\r\nb');
    // stderr stays lines, prefixed with the host as before.
    expect(bytes.stderr).toContain('text on stderr');
  });

  it('start --bytes keeps binary output intact for receive', async () => {
    await using s = await sandbox();
    const file = join(s.dir, 'blob.bin');
    // Random bytes with no trailing newline: not UTF-8, and line splitting would change them.
    const started = await s.rjob(
      'start',
      '--name',
      'blob',
      '--bytes',
      '--',
      `head -c 200000 /dev/urandom > '${file}'; cat '${file}'`,
    );
    expect(started.code).toBe(ExitCode.Ok);
    expect((await s.rjob('wait', 'blob')).code).toBe(ExitCode.Ok);
    const received = await s.rjob('receive', 'blob');
    expect(received.code).toBe(ExitCode.Ok);
    const expected = await readFile(file);
    expect(received.stdoutBytes.length).toBe(expected.length);
    expect(received.stdoutBytes.equals(expected)).toBe(true);
  });

  it('refuses --bytes where it has no meaning, with a usage error', async () => {
    await using s = await sandbox();
    const onJs = await s.rjob('start', '--bytes', '--type', 'thread', '--eval', 'yield 1');
    expect(onJs.code).toBe(ExitCode.Usage);
    expect(onJs.stderr).toMatch(/--bytes is for commands and programs.*\(ERR_USAGE\)\n$/);
    const asJob = await s.rjob('invoke', '-c', 'localhost', '--bytes', '--as-job', '--', 'true');
    expect(asJob.code).toBe(ExitCode.Usage);
    expect(asJob.stderr).toMatch(/--bytes cannot be combined with --as-job.*\(ERR_USAGE\)\n$/);
  });
});

describe('invoke --disconnected', () => {
  it('starts the work in a new Disconnected session per host; the results are there later', async () => {
    await using s = await sandbox();
    const out = await s.rjob(
      'invoke',
      '-c',
      'localhost,127.0.0.1:1',
      '--disconnected',
      '--',
      'echo one; sleep 0.5; echo two',
    );
    // The unreachable host is one coded line and exit 4; the reachable one still got its session.
    expect(out.code).toBe(ExitCode.Unreachable);
    expect(out.stderr).toMatch(/^rjob: 127\.0\.0\.1:1: .+\(ERR_SSH_CONNECT_REFUSED\)\n$/);
    expect(out.stdout).toMatch(/Session1\s+unix\s+\S+\s+\S+\s+Disconnected/);
    expect(out.stdout).not.toContain('127.0.0.1:1');

    const list = await s.rjob('session', 'list');
    expect(list.stdout).toMatch(/Session1\s+unix/);
    const received = await s.rjob('receive', '-s', 'Session1', '1', '--wait');
    expect(received.code).toBe(ExitCode.Ok);
    expect(received.stdout).toBe('one\ntwo\n');
    expect((await s.rjob('session', 'remove', 'Session1')).code).toBe(ExitCode.Ok);
  });

  it('is refused with --as-job or -s, with a usage error', async () => {
    await using s = await sandbox();
    const asJob = await s.rjob('invoke', '-c', 'localhost', '--disconnected', '--as-job', '--', 'true');
    expect(asJob.code).toBe(ExitCode.Usage);
    expect(asJob.stderr).toMatch(/--disconnected needs -c .*\(ERR_USAGE\)\n$/);
    const inSession = await s.rjob('invoke', '-s', 'nosuch', '--disconnected', '--', 'true');
    expect(inSession.code).toBe(ExitCode.Usage);
  });
});
