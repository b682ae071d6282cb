import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { noNodePath, type SshdFixture, sshdUnavailableReason, startSshd } from '@rjob/transport-ssh/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from './io.js';
import { sandbox } from './testing/sandbox.js';

const skip = sshdUnavailableReason();
if (skip && process.env.CI) throw new Error(`sshd is needed in CI: ${skip}`);

/** A user of its own: its sessions get a PATH without node. */
const USER = 'rjobclinonode';
const NOTICE = /^rjob: (nonode\d): no node there, so no agent; running the command by plain SSH exec$/;

describe.skipIf(skip !== undefined)('invoke on hosts without node', { timeout: 180_000 }, () => {
  let box: SshdFixture;
  let dir: string;
  let home: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rjob-cli-nonode-'));
    await chmod(dir, 0o755);
    const bin = await noNodePath(dir);
    // sshd sets a session's PATH itself; SetEnv overrides it.
    box = await startSshd({ user: USER, extraConfig: [`SetEnv PATH=${bin}`] });
    home = join(dir, 'home');
    await mkdir(join(home, '.ssh'), { recursive: true, mode: 0o700 });
    const knownHosts = join(home, '.ssh', 'known_hosts');
    await writeFile(knownHosts, `${box.knownHostsLine}\n`);
    await writeFile(
      join(home, '.ssh', 'config'),
      ['nonode1', 'nonode2', 'nonode3']
        .map((alias) => `Host ${alias}\n  HostName ${box.host}\n  Port ${box.port}\n`)
        .join('') +
        `Host *\n  User ${USER}\n  IdentityFile ${box.clientKeyPath}\n  UserKnownHostsFile ${knownHosts}\n` +
        '  StrictHostKeyChecking yes\n  GlobalKnownHostsFile /dev/null\n',
    );
  });

  afterAll(async () => {
    await box?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const env = (): NodeJS.ProcessEnv => ({ HOME: home, SSH_AUTH_SOCK: '', RJOB_REMOTE_AGENT: '' });

  it("runs `invoke -- 'echo hi'` by plain exec, saying so in one line", async () => {
    await using s = await sandbox(env());
    const out = await s.bin(['invoke', '-c', 'nonode1', '--', 'echo hi; echo "$PATH"']);
    expect(out.code, out.stderr).toBe(ExitCode.Ok);
    expect(out.stdout).toBe(`[nonode1] hi\n[nonode1] ${join(dir, 'bin')}\n`);
    expect(out.stderr.split('\n').filter(Boolean)).toEqual([
      'rjob: nonode1: no node there, so no agent; running the command by plain SSH exec',
    ]);
  });

  it('a fan-out over three such hosts: prefixed output, the exit code of a failing command, two at once', async () => {
    await using s = await sandbox(env());
    const [ok, failing] = await Promise.all([
      s.bin(['invoke', '-c', 'nonode1,nonode2,nonode3', '--', 'echo up']),
      s.bin(['invoke', '-c', 'nonode1,nonode2', '--', 'echo before; exit 3']),
    ]);
    expect({ code: ok.code, stdout: ok.stdout, stderr: ok.stderr }).toMatchObject({ code: ExitCode.Ok });
    expect(ok.stdout.split('\n').filter(Boolean).sort()).toEqual([
      '[nonode1] up',
      '[nonode2] up',
      '[nonode3] up',
    ]);
    const okErr = ok.stderr.split('\n').filter(Boolean);
    expect(okErr.filter((line) => NOTICE.test(line))).toHaveLength(3);
    expect(okErr.at(-1)).toBe('rjob: 3 hosts: 3 succeeded, 0 failed, 0 unreachable');

    expect(failing.code).toBe(ExitCode.JobFailed);
    expect(failing.stdout.split('\n').filter(Boolean).sort()).toEqual([
      '[nonode1] before',
      '[nonode2] before',
    ]);
    const failErr = failing.stderr.split('\n').filter(Boolean);
    expect(
      failErr.filter((line) => /^\[nonode\d\] FAILED: .*\(ERR_JOB_EXIT_CODE\)$/.test(line)),
    ).toHaveLength(2);
    expect(failErr.at(-1)).toBe('rjob: 2 hosts: 0 succeeded, 2 failed, 0 unreachable');
  });

  it('work that needs the agent (JavaScript) fails with ERR_SSH_NO_AGENT, saying what still works', async () => {
    await using s = await sandbox(env());
    const out = await s.bin(['invoke', '-c', 'nonode1', '--type', 'thread', '--eval', 'return 1']);
    expect(out.code).not.toBe(ExitCode.Ok);
    expect(out.stdout).toBe('');
    expect(out.stderr).toMatch(/^rjob: nonode1: .*plain exec.*\(ERR_SSH_NO_AGENT\)\n$/s);
    expect(out.stderr).not.toMatch(NOTICE);
  });

  it('--as-job there runs the command by plain exec too, in the local agent', async () => {
    await using s = await sandbox(env());
    const started = await s.bin(['invoke', '-c', 'nonode1', '--as-job', '--name', 'aj', '--', 'echo hi']);
    expect(started.code).toBe(ExitCode.Ok);
    expect((await s.bin(['wait', 'aj'])).code).toBe(ExitCode.Ok);
    const received = await s.bin(['receive', 'aj']);
    expect(received.stdout).toBe('[nonode1] hi\n');
    // The notice travels with the job, on its warning stream.
    expect(received.stderr).toMatch(/no node there, so no agent; running the command by plain SSH exec/);
  });

  it('a session there says it needs node on the host (ERR_SSH_NO_AGENT), and nothing is remembered', async () => {
    await using s = await sandbox(env());
    const out = await s.bin(['session', 'new', 'nonode1', '--name', 'nn']);
    expect(out.code).not.toBe(ExitCode.Ok);
    expect(out.stdout).toBe('');
    expect(out.stderr).toMatch(/node.*\(ERR_SSH_NO_AGENT\)\n$/s);
    expect((await s.bin(['session', 'list'])).stdout).toBe('');
    // Plain commands still work there.
    expect((await s.bin(['invoke', '-c', 'nonode1', '--', 'echo still'])).stdout).toBe('[nonode1] still\n');
  });
});
