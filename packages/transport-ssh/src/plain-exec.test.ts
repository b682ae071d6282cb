import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JobManager, openSession, RjobError } from '@rjob/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SshErrorCode } from './errors.js';
import {
  invokeManySsh,
  plainExecCommand,
  plainShellCommand,
  type SshExecDefinition,
  sshExecJobType,
} from './plain-exec.js';
import { type SshTransportOptions, sshTransport } from './ssh-transport.js';
import { noNodePath } from './testing/no-node.js';
import { type SshdFixture, startSshd, sshdUnavailableReason } from './testing/sshd-fixture.js';

const skip = sshdUnavailableReason();

/** A second test user whose sessions get a PATH without node. */
const NO_NODE_USER = 'rjobnonode';

describe('plainExecCommand', () => {
  it('runs the command as a new process group leader and reports its id first on stderr', () => {
    const out = execFileSync('sh', [
      '-c',
      `${plainExecCommand(`echo "it's $(ps -o pgid= -p $$ | tr -d ' ')"`)} 2>&1`,
    ])
      .toString()
      .trim()
      .split('\n');
    const pgid = /^rjob-pgid (\d+)$/.exec(out[0]!)?.[1];
    expect(pgid).toBeDefined();
    // The inner shell exec'd the command: the command's own group is the one reported.
    expect(out[1]).toBe(`it's ${pgid}`);
  });
});

describe('plainShellCommand', () => {
  it('takes over only bare shell commands, which plain exec runs the same way', () => {
    expect(plainShellCommand({ definition: { command: 'uptime' } })).toBe('uptime');
    expect(plainShellCommand({ type: 'process', definition: 'uptime' })).toBe('uptime');
    expect(plainShellCommand({ definition: { command: 'ls', cwd: '/srv' } })).toBeUndefined();
    expect(plainShellCommand({ type: 'thread', definition: { eval: 'yield 1' } })).toBeUndefined();
  });
});

function codes(error: unknown): string[] {
  const out: string[] = [];
  for (let e = error; RjobError.is(e) || e instanceof Error; e = (e as Error).cause) {
    if (RjobError.is(e)) out.push(e.code);
  }
  return out;
}

/** Pids of `uid`'s live processes whose command line is exactly `commandLine`, from /proc. */
function processesOf(uid: number, commandLine: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const status = readFileSync(`/proc/${name}/status`, 'utf8');
      if (Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]) !== uid) continue;
      if (/^State:\s+Z/m.test(status)) continue;
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').join(' ').trim() === commandLine)
        out.push(Number(name));
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}

async function until(condition: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, 20));
}

describe.skipIf(skip !== undefined)('plain exec on a host without node (OpenSSH sshd)', () => {
  let box: SshdFixture;
  let dir: string;
  let options: SshTransportOptions;
  let uid: number;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rjob-nonode-'));
    // Read and searched by the test user; the fixture's own files sit in their own temp dir.
    await chmod(dir, 0o755);
    const bin = await noNodePath(dir);
    // sshd sets a session's PATH itself; SetEnv overrides it (and anything the user could send).
    box = await startSshd({ user: NO_NODE_USER, extraConfig: [`SetEnv PATH=${bin}`] });
    uid = Number(execFileSync('id', ['-u', NO_NODE_USER]).toString().trim());
    const knownHosts = join(dir, 'known_hosts');
    const configFile = join(dir, 'config');
    await writeFile(knownHosts, `${box.knownHostsLine}\n`);
    await writeFile(
      configFile,
      ['nonode1', 'nonode2']
        .map(
          (alias) =>
            `Host ${alias}\n  HostName ${box.host}\n  Port ${box.port}\n  User ${NO_NODE_USER}\n  IdentityFile ${box.clientKeyPath}\n`,
        )
        .join('') +
        `Host *\n  StrictHostKeyChecking yes\n  UserKnownHostsFile ${knownHosts}\n  GlobalKnownHostsFile /dev/null\n`,
    );
    options = { sshConfig: { configFile, systemConfigFile: null }, agent: false };
  });

  afterAll(async () => {
    await box?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function run(manager: JobManager, command: string, target = 'nonode1') {
    const type = sshExecJobType(options);
    const job = await manager.start(type, { target, command } satisfies SshExecDefinition);
    await manager.wait(job);
    const records = await manager.receive(job);
    return { job, records };
  }

  it('the test user really has no node on its PATH', async () => {
    const manager = new JobManager();
    try {
      const { job, records } = await run(manager, 'echo "$PATH"; command -v node || echo "no node"');
      expect(job.state).toBe('Completed');
      expect(records.map((r) => r.data)).toEqual([join(dir, 'bin'), 'no node']);
    } finally {
      await manager.close();
    }
  });

  it('streams output and error lines as records; exit codes give Completed or Failed like process jobs', async () => {
    const manager = new JobManager();
    try {
      const ok = await run(manager, 'for i in 1 2 3; do echo "line $i"; done; echo "to stderr" >&2');
      expect(ok.job.state).toBe('Completed');
      expect(ok.records.filter((r) => r.stream === 'output').map((r) => r.data)).toEqual([
        'line 1',
        'line 2',
        'line 3',
      ]);
      // The wrapper's own pgid line is not a record; the command's stderr is.
      expect(ok.records.filter((r) => r.stream === 'error').map((r) => r.data)).toEqual(['to stderr']);

      const failed = await run(manager, 'echo partial; exit 3');
      expect(failed.job.state).toBe('Failed');
      expect(failed.job.reason?.code).toBe('ERR_JOB_EXIT_CODE');
      expect(failed.job.reason?.exitCode).toBe(3);
      expect(failed.records.filter((r) => r.stream === 'output').map((r) => r.data)).toEqual(['partial']);
    } finally {
      await manager.close();
    }
  });

  it('stop ends the whole remote process group, not only the shell', async () => {
    const manager = new JobManager();
    try {
      const type = sshExecJobType({ ...options, stopGraceMs: 5_000 });
      // Two background sleeps and a foreground one: a kill of the shell alone would leave them.
      const job = await manager.start(type, {
        target: 'nonode1',
        command: 'sleep 3001 & sleep 3002 & echo started; sleep 3003',
      });
      await until(async () => (await manager.receive(job, { keep: true })).some((r) => r.data === 'started'));
      await until(() => ['3001', '3002', '3003'].every((n) => processesOf(uid, `sleep ${n}`).length === 1));
      await manager.stop(job);
      await manager.wait(job);
      expect(job.state).toBe('Stopped');
      await until(() => ['3001', '3002', '3003'].every((n) => processesOf(uid, `sleep ${n}`).length === 0));
    } finally {
      await manager.close();
    }
  });

  it('sessions are refused with ERR_SSH_NO_AGENT saying what needs the agent and what still works', async () => {
    const transport = sshTransport(options);
    const refused = await openSession(transport, 'nonode1').then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(codes(refused)).toContain(SshErrorCode.NoAgent);
    let cause: unknown = refused;
    while (RjobError.is(cause) && cause.code !== SshErrorCode.NoAgent) cause = cause.cause;
    const noAgent = cause as RjobError;
    expect(noAgent.message).toMatch(/node is not on its PATH/);
    expect(noAgent.message).toMatch(
      /Sessions, disconnect\/reconnect and results kept on the remote host need the agent/,
    );
    expect(noAgent.message).toMatch(/shell commands still run .* plain exec/);
    expect(noAgent.details).toMatchObject({ node: null, plainExec: true });
  });

  it('invokeManySsh: shell commands fall back to plain exec per host; other work keeps ERR_SSH_NO_AGENT', async () => {
    const manager = new JobManager();
    try {
      const parent = invokeManySsh(
        manager,
        ['nonode1', 'nonode2'],
        { definition: { command: 'id -un' } },
        options,
      );
      await manager.wait(parent);
      expect(parent.state).toBe('Completed');
      for (const child of parent.children) {
        expect((await manager.receive(child)).map((r) => r.data)).toEqual([NO_NODE_USER]);
      }
      // JavaScript work needs node there: no fallback, the child says why.
      const js = invokeManySsh(
        manager,
        ['nonode1'],
        { type: 'thread', definition: { eval: 'yield 1' } },
        options,
      );
      await manager.wait(js);
      expect(js.state).toBe('Failed');
      expect(codes(js.children[0]!.reason)).toContain(SshErrorCode.NoAgent);
    } finally {
      await manager.close();
    }
  });

  it('fans out over several such hosts as a parent job with one plain-exec child per host', async () => {
    const manager = new JobManager();
    try {
      const type = sshExecJobType(options);
      const parent = manager.startGroup({
        name: 'fan',
        children: ['nonode1', 'nonode2'].map((target) => ({
          type,
          definition: { target, command: 'id -un' },
          location: target,
        })),
      });
      await manager.wait(parent);
      expect(parent.state).toBe('Completed');
      const byHost = await Promise.all(
        parent.children.map(async (child) => [
          child.location,
          (await manager.receive(child)).map((r) => r.data),
        ]),
      );
      expect(byHost).toEqual([
        ['nonode1', [NO_NODE_USER]],
        ['nonode2', [NO_NODE_USER]],
      ]);
    } finally {
      await manager.close();
    }
  });
});
