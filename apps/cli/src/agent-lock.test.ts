/**
 * One agent per state directory: racing starts share one daemon, a second agent (`--listen` or a
 * daemon) on a served directory is refused, a lock left by a killed agent does not block the next.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ExitCode } from './io.js';
import { alive, waitForLine } from './testing/daemon.js';
import { BIN, sandbox } from './testing/sandbox.js';

const children: ChildProcess[] = [];

afterEach(async () => {
  for (const child of children.splice(0)) {
    if (child.exitCode !== null || child.signalCode !== null) continue;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }
});

async function pidIn(stateDir: string): Promise<number> {
  return Number((await readFile(join(stateDir, 'agent.pid'), 'utf8')).trim());
}

async function until(condition: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, 20));
}

describe('one agent per state directory', { timeout: 120_000 }, () => {
  it('several commands starting the agent at once all reach the one that won', async () => {
    await using s = await sandbox();
    const results = await Promise.all([
      ...Array.from({ length: 4 }, (_, i) => s.bin(['start', '--name', `j${i}`, '--', `echo ${i}`])),
      s.bin(['agent', 'start']),
      s.bin(['get']),
    ]);
    for (const result of results) expect(result).toMatchObject({ code: 0, stderr: '' });
    const pid = await pidIn(s.dir);
    expect(alive(pid)).toBe(true);
    // Every job landed in that one agent.
    const listed = await s.rjob('get', '--json');
    expect((JSON.parse(listed.stdout) as { name: string }[]).map((job) => job.name).sort()).toEqual([
      'j0',
      'j1',
      'j2',
      'j3',
    ]);
    expect(await pidIn(s.dir)).toBe(pid);
  });

  it('refuses `rjob agent --listen` and a second daemon on the state directory of a running daemon', async () => {
    await using s = await sandbox();
    expect((await s.rjob('start', '--name', 'kept', '--', 'echo kept')).code).toBe(0);
    const pid = await pidIn(s.dir);

    const listen = await s.bin(['agent', '--listen', 'ws://127.0.0.1:0']);
    expect(listen.code).toBe(ExitCode.Refused);
    expect(listen.stdout).toBe('');
    expect(listen.stderr).toMatch(
      new RegExp(
        `^rjob: An agent \\(pid ${pid}\\) already serves the state directory [^\\n]*\\(ERR_AGENT_RUNNING\\)\\n$`,
      ),
    );

    const daemon = await s.bin(['agent', 'daemon']);
    expect(daemon.code).toBe(ExitCode.Refused);
    expect(daemon.stderr).toContain('ERR_AGENT_RUNNING');

    // The running daemon was not disturbed: same pid, its job still there.
    expect(await pidIn(s.dir)).toBe(pid);
    expect(alive(pid)).toBe(true);
    expect((await s.rjob('receive', 'kept', '--wait')).stdout).toBe('kept\n');
  });

  it('a lock left by a SIGKILLed agent does not block the next start', async () => {
    await using s = await sandbox();
    expect((await s.rjob('agent', 'start')).code).toBe(0);
    const pid = await pidIn(s.dir);
    process.kill(-pid, 'SIGKILL');
    await until(() => !alive(pid));
    expect((await readFile(join(s.dir, 'agent.lock'), 'utf8')).split('\n')[0]).toBe(String(pid));

    // Several starts race over the stale lock: one agent takes it, every command reaches that one.
    const started = await Promise.all([
      s.bin(['start', '--name', 'after', '--', 'echo after']),
      s.bin(['agent', 'start']),
      s.bin(['get']),
    ]);
    for (const result of started) expect(result).toMatchObject({ code: 0, stderr: '' });
    const next = await pidIn(s.dir);
    expect(next).not.toBe(pid);
    expect((await readFile(join(s.dir, 'agent.lock'), 'utf8')).split('\n')[0]).toBe(String(next));
    expect((await s.rjob('receive', 'after', '--wait')).stdout).toBe('after\n');
  });

  it('`rjob agent --listen` is the agent of its state directory: local commands reach it, a daemon is refused', async () => {
    await using s = await sandbox();
    const child = spawn(process.execPath, [BIN, 'agent', '--listen', 'ws://127.0.0.1:0'], {
      cwd: s.dir,
      env: s.env,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.push(child);
    await waitForLine(child, /listening on ws:\/\/127\.0\.0\.1:\d+ /);

    expect((await s.rjob('start', '--name', 'local', '--', 'echo local')).code).toBe(0);
    expect((await s.rjob('receive', 'local', '--wait')).stdout).toBe('local\n');
    expect(await pidIn(s.dir)).toBe(child.pid);
    expect((await s.rjob('agent', 'status')).stdout).toContain(`agent running (pid ${child.pid})`);

    const daemon = await s.bin(['agent', 'daemon']);
    expect(daemon.code).toBe(ExitCode.Refused);
    expect(daemon.stderr).toContain(`An agent (pid ${child.pid}) already serves`);

    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    // Its lock went with it: the next command starts a daemon.
    expect((await s.rjob('get', 'local')).code).toBe(0);
    expect(await pidIn(s.dir)).not.toBe(child.pid);
  });
});
