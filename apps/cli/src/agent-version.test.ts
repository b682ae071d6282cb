/**
 * A local agent that another rjob started (an upgrade while it ran) is not talked to silently: an
 * idle one is restarted at once, with one notice line, its finished jobs kept; a busy one goes on
 * serving, and every command says so with ERR_AGENT_VERSION until its jobs are done.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { socketIsLive } from '@rjob/agent/cli';
import { openSession, unixSocketTransport } from '@rjob/core';
import { describe, expect, it } from 'vitest';
import { ExitCode } from './io.js';
import { type Sandbox, sandbox } from './testing/sandbox.js';

const TSX = fileURLToPath(import.meta.resolve('tsx'));
/** The agent package's own bin: its daemon calls itself `rjob-agent`, not this CLI's `rjob/<version>`. */
const OTHER_AGENT = fileURLToPath(new URL('../../../packages/agent/src/cli-entry.ts', import.meta.url));

async function startOtherAgent(s: Sandbox): Promise<number> {
  const socket = join(s.dir, 'agent.sock');
  const child = spawn(
    process.execPath,
    [
      '--conditions=@rjob/source',
      '--import',
      TSX,
      OTHER_AGENT,
      'daemon',
      '--state-dir',
      s.dir,
      '--socket',
      socket,
    ],
    { detached: true, stdio: 'ignore' },
  );
  child.unref();
  const deadline = Date.now() + 30_000;
  while (!(await socketIsLive(socket))) {
    if (Date.now() > deadline) throw new Error('the other agent did not start');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return child.pid!;
}

async function pidOf(s: Sandbox): Promise<number> {
  return Number((await readFile(join(s.dir, 'agent.pid'), 'utf8')).trim());
}

describe('a local agent of another rjob version', { timeout: 120_000 }, () => {
  it('idle: restarted at once with one notice line, its finished jobs kept', async () => {
    await using s = await sandbox();
    const oldPid = await startOtherAgent(s);
    // A finished job in the old agent, put there the way an older rjob would have.
    const host = await openSession(unixSocketTransport, join(s.dir, 'agent.sock'), { host: true });
    const job = await host.jobs.start({ definition: { command: 'echo kept' } }, { name: 'kept' });
    await host.jobs.wait(job.id);
    await host.close();

    const first = await s.rjob('get', 'kept');
    expect(first.code, first.stderr).toBe(ExitCode.Ok);
    expect(first.stderr).toMatch(
      /^rjob: restarted the local agent \(it ran rjob-agent, this is rjob\/\S+; no job was running\)\n$/,
    );
    expect(first.stdout).toMatch(/kept\s+BackgroundJob\s+Completed/);
    const newPid = await pidOf(s);
    expect(newPid).not.toBe(oldPid);
    // Said once: the new agent is this rjob's.
    const again = await s.rjob('receive', 'kept');
    expect(again).toEqual({ code: ExitCode.Ok, stdout: 'kept\n', stderr: '' });
    expect(await pidOf(s)).toBe(newPid);
  });

  it('busy: it goes on serving its running job, and each command says so with ERR_AGENT_VERSION', async () => {
    await using s = await sandbox();
    const oldPid = await startOtherAgent(s);
    const host = await openSession(unixSocketTransport, join(s.dir, 'agent.sock'), { host: true });
    await host.jobs.start({ definition: { command: 'sleep 60' } }, { name: 'busy' });
    await host.close();

    const outs = await Promise.all([s.rjob('get', 'busy'), s.rjob('get', 'busy')]);
    for (const out of outs) {
      expect(out.code, out.stderr).toBe(ExitCode.Ok);
      expect(out.stdout).toMatch(/busy\s+BackgroundJob\s+Running/);
      expect(out.stderr).toMatch(
        /^rjob: the local agent runs rjob-agent, this is rjob\/\S+; .*\(ERR_AGENT_VERSION\)\n$/,
      );
    }
    expect(await pidOf(s)).toBe(oldPid);
    // Once its job is done it is idle, and the next command restarts it.
    expect((await s.rjob('stop', 'busy')).code).toBe(ExitCode.Ok);
    const next = await s.rjob('get', 'busy');
    expect(next.stderr).toMatch(/^rjob: restarted the local agent/);
    expect(next.stdout).toMatch(/busy\s+BackgroundJob\s+Stopped/);
    expect(await pidOf(s)).not.toBe(oldPid);
  });
});
