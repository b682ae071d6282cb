/**
 * rjob issue 17: local jobs that do what pueue users expect, through the real CLI against the
 * local agent (a daemon the CLI starts in the sandbox's private state directory).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ExitCode } from './io.js';
import { type Sandbox, sandbox } from './testing/sandbox.js';

interface JobJson {
  id: number;
  name: string;
  state: string;
  exitCode?: number;
  label?: string;
  command: string;
}

describe('get', () => {
  it('shows a finished process job exit code, cuts the table to a terminal and checks --state', async () => {
    await using s = await sandbox();
    await s.rjob('start', '--name', 'bad', '--', 'exit 3');
    await s.rjob('start', '--name', 'good', '--', `true ${'x'.repeat(200)}`);
    await s.rjob('wait', 'bad', 'good');

    const table = await s.rjob('get');
    expect(table.stdout).toMatch(/bad\s+BackgroundJob\s+Failed \(3\)\s/);
    expect(table.stdout).toMatch(/good\s+BackgroundJob\s+Completed\s/);
    // Piped: every character of the command.
    expect(table.stdout).toContain('x'.repeat(200));

    const json = JSON.parse((await s.rjob('get', '--json')).stdout) as JobJson[];
    expect(json.map((job) => [job.name, job.state, job.exitCode])).toEqual([
      ['bad', 'Failed', 3],
      ['good', 'Completed', 0],
    ]);

    const narrow = await s.rjobOnTerminal(80, 'get');
    expect(narrow.code).toBe(0);
    const lines = narrow.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(3);
    for (const line of lines) expect(line.length).toBeLessThanOrEqual(80);
    expect(lines[2]).toMatch(/good\s+BackgroundJob\s+Completed\s+.*true x+…$/);

    // States in any case; the filter keeps only those jobs.
    const failed = JSON.parse((await s.rjob('get', '--state', 'failed', '--json')).stdout) as JobJson[];
    expect(failed.map((job) => job.name)).toEqual(['bad']);
    expect(await s.rjob('get', '--state', 'Bogus')).toEqual({
      code: ExitCode.Usage,
      stdout: '',
      stderr: expect.stringMatching(
        /^rjob: --state is one of NotStarted, Running, .*not Bogus.*\(ERR_USAGE\)\n$/,
      ),
    });
  });
});

describe('start', () => {
  it('takes the command without -- once its own options end; -- still works', async () => {
    await using s = await sandbox();
    const plain = await s.rjob('start', '--name', 'plain', 'echo', 'hello', 'world');
    expect(plain.code).toBe(0);
    expect(plain.stdout).toMatch(/plain\s+BackgroundJob\s+\w+\s+\w+\s+localhost\s+echo hello world\n/);
    // The command's own options are its, not start's.
    const own = await s.rjob('start', '-n', 'own', 'ls', '-a', '--', '.');
    expect(own.stdout).toMatch(/own\s+BackgroundJob\s+.*ls -a -- \.\n/);
    const dashed = await s.rjob('start', '--name=dashed', '--', 'echo', 'dashed');
    expect(dashed.stdout).toMatch(/dashed\s+BackgroundJob\s+.*echo dashed\n/);
    await s.rjob('wait', 'plain', 'own', 'dashed');
    expect((await s.rjob('receive', 'plain')).stdout).toBe('hello world\n');
    expect((await s.rjob('receive', 'own')).stdout).toMatch(/^\.\n\.\.\n/);
    expect((await s.rjob('receive', 'dashed')).stdout).toBe('dashed\n');
    // A mistyped option of start's own is still an error, not a command.
    expect((await s.rjob('start', '--nmae', 'x', 'true')).code).toBe(ExitCode.Usage);
  });
});

describe('labels', () => {
  it('shows a job label, filters by it, and keeps it across an agent restart', async () => {
    await using s = await sandbox();
    const started = await s.rjob('start', '--label', 'nightly backup', '--name', 'b1', 'true');
    expect(started.stdout).toMatch(/^Id\s+Name\s+Type\s+State\s+HasMoreData\s+Location\s+Label\s+Command\n/);
    expect(started.stdout).toMatch(/b1\s+BackgroundJob\s+\w+\s+\w+\s+localhost\s+nightly backup\s+true\n/);
    await s.rjob('start', '-l', 'deploy', '--name', 'd1', 'true');
    await s.rjob('start', '--name', 'plain', 'true');
    await s.rjob('wait');

    const byLabel = async (...filter: string[]): Promise<string[]> =>
      (JSON.parse((await s.rjob('get', '--json', ...filter)).stdout) as JobJson[]).map((job) => job.name);
    expect(await byLabel('--label', 'deploy')).toEqual(['d1']);
    expect(await byLabel('--label', 'nightly*')).toEqual(['b1']);
    expect(await byLabel('--label', 'nightly')).toEqual([]);
    const all = JSON.parse((await s.rjob('get', '--json')).stdout) as JobJson[];
    expect(all.map((job) => [job.name, job.label])).toEqual([
      ['b1', 'nightly backup'],
      ['d1', 'deploy'],
      ['plain', undefined],
    ]);

    // The agent keeps a job's label with its definition in the job store.
    expect((await s.rjob('agent', 'stop')).stdout).toContain('agent stopped');
    expect(await byLabel('--label', 'deploy')).toEqual(['d1']);
    const table = await s.rjob('get');
    expect(table.stdout).toMatch(
      /b1\s+BackgroundJob\s+Completed\s+\w+\s+localhost\s+nightly backup\s+true\n/,
    );
    expect(table.stdout).toMatch(/plain\s+BackgroundJob\s+Completed\s+\w+\s+localhost\s+true\n/);
    // The restored job's definition came back with it: it can run again, label and all.
    const again = JSON.parse((await s.rjob('restart', 'd1', '--json')).stdout) as JobJson[];
    expect(again.map((job) => [job.name, job.label, job.command])).toEqual([['d1', 'deploy', 'true']]);
  });
});

describe('clean and remove --state', () => {
  it('removes finished jobs by state and age, never running ones', async () => {
    await using s = await sandbox();
    await s.rjob('start', '-n', 'ok1', 'true');
    await s.rjob('start', '-n', 'ok2', 'true');
    await s.rjob('start', '-n', 'bad', 'exit 4');
    await s.rjob('start', '-n', 'gone', 'sleep 60');
    await s.rjob('stop', 'gone');
    await s.rjob('wait', 'ok1', 'ok2', 'bad');
    await s.rjob('start', '-n', 'busy', 'sleep 60');
    const names = async (): Promise<string[]> =>
      (JSON.parse((await s.rjob('get', '--json')).stdout) as JobJson[]).map((job) => job.name);

    expect(await s.rjob('clean', '--state', 'Running')).toMatchObject({
      code: ExitCode.Usage,
      stderr: expect.stringMatching(/--state is Completed, Failed or Stopped, not Running \(ERR_USAGE\)/),
    });
    expect((await s.rjob('clean', '--older-than', 'soon')).code).toBe(ExitCode.Usage);
    // Nothing ended an hour ago.
    expect(await s.rjob('clean', '--older-than', '1h')).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(await names()).toEqual(['ok1', 'ok2', 'bad', 'gone', 'busy']);

    const failed = await s.rjob('clean', '--state', 'failed');
    expect(failed.stdout).toMatch(/bad\s+BackgroundJob\s+Failed \(4\)/);
    expect(await names()).toEqual(['ok1', 'ok2', 'gone', 'busy']);

    // remove --state: the jobs in that state, among the ones named or all.
    expect((await s.rjob('remove', 'ok*', 'gone', '--state', 'Stopped')).code).toBe(0);
    expect(await names()).toEqual(['ok1', 'ok2', 'busy']);
    expect((await s.rjob('remove', '--state', 'Running')).code).toBe(ExitCode.Refused);

    const rest = JSON.parse((await s.rjob('clean', '--older-than', '0s', '--json')).stdout) as JobJson[];
    expect(rest.map((job) => job.name)).toEqual(['ok1', 'ok2']);
    expect(await names()).toEqual(['busy']);
    await s.rjob('remove', '--state', 'Running', '--force');
    expect(await names()).toEqual([]);
  });
});

describe('receive --follow, --tail, --timestamps', () => {
  it('follows without consuming, shows the last records and their times', async () => {
    await using s = await sandbox();
    // The job (in the sandbox directory, as the caller's) waits for the test to create `go`.
    await s.rjob(
      'start',
      '-n',
      'w',
      'echo one; echo two; while [ ! -e go ]; do sleep 0.05; done; echo three',
    );
    const following = s.rjob('receive', 'w', '--follow');
    await writeFile(join(s.dir, 'go'), '');
    expect(await following).toEqual({ code: 0, stdout: 'one\ntwo\nthree\n', stderr: '' });
    // Nothing was consumed.
    expect((await s.rjob('receive', 'w', '--keep')).stdout).toBe('one\ntwo\nthree\n');

    expect(await s.rjob('receive', 'w', '--tail', '2')).toEqual({
      code: 0,
      stdout: 'two\nthree\n',
      stderr: '',
    });
    // A follow after the tail goes on after it: no record twice.
    expect((await s.rjob('receive', 'w', '--tail', '1', '--follow')).stdout).toBe('three\n');
    expect((await s.rjob('receive', 'w', '--tail', '0')).code).toBe(ExitCode.Usage);

    const stamped = await s.rjob('receive', 'w', '--keep', '--timestamps');
    const lines = stamped.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(3);
    for (const [i, word] of ['one', 'two', 'three'].entries()) {
      const [time, text] = lines[i]!.split(' ');
      expect(text).toBe(word);
      expect(new Date(time!).toISOString()).toBe(time);
    }
    // The records are still all there for a consuming receive.
    expect((await s.rjob('receive', 'w')).stdout).toBe('one\ntwo\nthree\n');
    expect((await s.rjob('receive', 'w')).stdout).toBe('');
  });
});

describe('restart', () => {
  it('runs a finished job again with its command, directory, environment and label', async () => {
    await using s = await sandbox({ PUEUE_TEST_VAR: 'from-caller' });
    await s.rjob('start', '-n', 'env', '-l', 'lbl', 'echo "$PUEUE_TEST_VAR $(pwd)"; exit 2');
    await s.rjob('start', '-n', 'ok', 'true');
    await s.rjob('start', '-n', 'busy', 'sleep 60');
    await s.rjob('wait', 'env', 'ok');

    expect((await s.rjob('restart', 'busy')).code).toBe(ExitCode.Refused);
    expect((await s.rjob('restart')).code).toBe(ExitCode.Usage);
    const again = JSON.parse((await s.rjob('restart', 'env', '--json')).stdout) as JobJson[];
    expect(again.map((job) => [job.id, job.name, job.label])).toEqual([[4, 'env', 'lbl']]);
    await s.rjob('wait', '4');
    // Run where and with what the first one had: the definition the agent kept.
    const out = await s.rjob('receive', '4');
    expect(out.stdout).toBe(`from-caller ${s.dir}\n`);
    expect(out.code).toBe(ExitCode.JobFailed);

    const failed = JSON.parse((await s.rjob('restart', '--all-failed', '--json')).stdout) as JobJson[];
    expect(failed.map((job) => [job.id, job.name])).toEqual([
      [5, 'env'],
      [6, 'env'],
    ]);
    await s.rjob('stop', 'busy');
  });
});

/** Until the job's process runs (a job is NotStarted for the moment its process is spawned). */
async function running(s: Sandbox, name: string): Promise<void> {
  for (;;) {
    const [job] = JSON.parse((await s.rjob('get', name, '--json')).stdout) as JobJson[];
    if (job!.state === 'Running') return;
    expect(job!.state).toBe('NotStarted');
    await new Promise((resolveLater) => setTimeout(resolveLater, 20));
  }
}

describe('pause and resume', () => {
  it('suspends a process job group, shows it Suspended, lets it go on, and still stops it', async () => {
    await using s = await sandbox();
    await s.rjob(
      'start',
      '-n',
      'p',
      'echo $$ > pid; while [ ! -e done ]; do sleep 0.05; done; echo finished',
    );
    await running(s, 'p');
    // The job's shell: its state letter in /proc (T = stopped by a signal).
    const procState = async (): Promise<string> => {
      const pid = (await readFile(join(s.dir, 'pid'), 'utf8').catch(() => '')).trim();
      if (!pid) return procState();
      return (await readFile(`/proc/${pid}/stat`, 'utf8')).replace(/^.*\) /s, '')[0]!;
    };
    const paused = await s.rjob('pause', 'p');
    expect(paused.code).toBe(0);
    expect(paused.stdout).toMatch(/p\s+BackgroundJob\s+Suspended\s/);
    expect(await procState()).toBe('T');
    expect((await s.rjob('get', '--state', 'suspended')).stdout).toMatch(/p\s+BackgroundJob\s+Suspended/);
    // Only a Running job is paused.
    const again = await s.rjob('pause', 'p');
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/cannot be suspended: it is Suspended/);
    expect((await s.rjob('resume', 'p')).stdout).toMatch(/p\s+BackgroundJob\s+Running\s/);
    expect(await procState()).not.toBe('T');
    await writeFile(join(s.dir, 'done'), '');
    expect((await s.rjob('wait', 'p')).stdout).toMatch(/Completed/);
    expect((await s.rjob('receive', 'p')).stdout).toBe('finished\n');

    await s.rjob('start', '-n', 'q', 'sleep 60');
    await running(s, 'q');
    expect((await s.rjob('pause', 'q')).code).toBe(0);
    expect((await s.rjob('stop', 'q')).stdout).toMatch(/q\s+BackgroundJob\s+Stopped/);
  });
});

describe('help and completion', () => {
  it('documents the new verbs and options', async () => {
    await using s = await sandbox();
    expect((await s.rjob('restart', '--help')).stdout).toMatch(/Usage: rjob restart[\s\S]*--all-failed/);
    const clean = await s.rjob('clean', '--help');
    expect(clean.code).toBe(0);
    expect(clean.stdout).toMatch(/Usage: rjob clean[\s\S]*--older-than[\s\S]*Examples:/);
    expect((await s.rjob('remove', '--help')).stdout).toContain('--state STATE');
    expect((await s.rjob('get', '--help')).stdout).toContain('--label TEXT');
    expect((await s.rjob('start', '--help')).stdout).toContain('--label TEXT');
    const bash = (await s.rjob('completion', 'bash')).stdout;
    expect(bash).toMatch(/compgen -W "start get receive wait stop remove clean /);
    expect(bash).toMatch(/clean\) COMPREPLY=\(\$\(compgen -W "--state --older-than/);
    expect(bash).toMatch(/get\) COMPREPLY=.*--label/);
    expect(bash).toMatch(/restart\) COMPREPLY=.*--all-failed/);
    expect(bash).toMatch(/pause\|resume\) COMPREPLY=/);
    expect((await s.rjob('pause', '--help')).stdout).toMatch(
      /Usage: rjob pause[\s\S]*SIGSTOP[\s\S]*Example:/,
    );
    expect((await s.rjob('resume', '--help')).stdout).toMatch(/Usage: rjob resume[\s\S]*SIGCONT/);
    expect(bash).toMatch(/receive\) COMPREPLY=.*--follow --tail --timestamps/);
    expect((await s.rjob('receive', '--help')).stdout).toMatch(/--follow[\s\S]*--tail N[\s\S]*--timestamps/);
    expect((await s.rjob('completion', 'zsh')).stdout).toMatch(/clean\) _arguments '--state/);
  });
});
