/**
 * The CLI against OpenSSH sshd on loopback (the fixture from @rjob/transport-ssh): hosts are
 * ssh_config aliases in a sandboxed $HOME, and the remote agent is this CLI's own
 * `rjob agent --stdio`, run from source by the test user.
 */
import { execFileSync } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type SshdFixture, sshdUnavailableReason, startSshd } from '@rjob/transport-ssh/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from './io.js';
import { sandbox } from './testing/sandbox.js';
import { stopDaemonIn } from './testing/daemon.js';

const skip = sshdUnavailableReason();
const TSX = fileURLToPath(import.meta.resolve('tsx'));
const ENTRY = fileURLToPath(new URL('./cli-entry.ts', import.meta.url));

let fixture: SshdFixture | undefined;
let home = '';
let remoteState = '';

/** A port on 127.0.0.1 that nothing listens on. */
async function unusedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

// Every step crosses sshd and starts node on the far side: generous, not a timing assertion.
describe.skipIf(skip !== undefined)('rjob against sshd', { timeout: 180_000 }, () => {
  beforeAll(async () => {
    fixture = await startSshd();
    // The remote agent's state belongs to the test user, as on a real host.
    remoteState = await mkdtemp(join(tmpdir(), 'rjob-cli-remote-'));
    const uid = Number(execFileSync('id', ['-u', fixture.user]).toString().trim());
    const gid = Number(execFileSync('id', ['-g', fixture.user]).toString().trim());
    await chown(remoteState, uid, gid);
    await chmod(remoteState, 0o700);
    // $HOME/.ssh/config as a user would write it: aliases, their key, and a strict known_hosts.
    home = await mkdtemp(join(tmpdir(), 'rjob-cli-home-'));
    await mkdir(join(home, '.ssh'), { mode: 0o700 });
    await writeFile(join(home, '.ssh', 'known_hosts'), `${fixture.knownHostsLine}\n`);
    await writeFile(join(home, '.ssh', 'empty_known_hosts'), '');
    const block = (alias: string, port: number, knownHosts: string): string =>
      `Host ${alias}\n  HostName 127.0.0.1\n  Port ${port}\n  User ${fixture!.user}\n  IdentityFile ${fixture!.clientKeyPath}\n  UserKnownHostsFile ${knownHosts}\n`;
    const knownHosts = join(home, '.ssh', 'known_hosts');
    await writeFile(
      join(home, '.ssh', 'config'),
      block('server01', fixture.port, knownHosts) +
        block('server02', fixture.port, knownHosts) +
        block('down', await unusedPort(), knownHosts) +
        block('stranger', fixture.port, join(home, '.ssh', 'empty_known_hosts')) +
        'Host *\n  StrictHostKeyChecking yes\n  GlobalKnownHostsFile /dev/null\n',
    );
  });

  afterAll(async () => {
    await stopDaemonIn(remoteState);
    await fixture?.stop();
    await rm(remoteState, { recursive: true, force: true });
    await rm(home, { recursive: true, force: true });
  });

  const env = (): NodeJS.ProcessEnv => ({
    HOME: home,
    SSH_AUTH_SOCK: '',
    // TMPDIR inside the state dir: whatever the remote agent leaves there goes with it.
    RJOB_REMOTE_AGENT: `TMPDIR=${remoteState} exec node --conditions=@rjob/source --import ${TSX} ${ENTRY} agent --stdio --state-dir ${remoteState}`,
  });

  it('S4: a job started in a named session keeps its results on the remote agent', async () => {
    await using s = await sandbox(env());
    const created = await s.rjob('session', 'new', 'server01', '--name', 's1');
    expect(created.stderr).toBe('');
    expect(created.stdout).toMatch(/1\s+s1\s+ssh\s+server01\s+\S+\s+Opened\s+Available/);
    const started = await s.rjob(
      'start',
      '-s',
      's1',
      '--name',
      'audit',
      '--',
      'for f in a b c; do echo "$f.conf"; done; id -un',
    );
    expect(started.code).toBe(0);
    await s.rjob('wait', '-s', 's1', 'audit');
    // Location is relative to the agent that runs the job: localhost, on server01.
    expect((await s.rjob('get', '-s', 's1')).stdout).toMatch(
      /audit\s+BackgroundJob\s+Completed\s+True\s+localhost/,
    );
    const first = await s.rjob('receive', '-s', 's1', 'audit', '--keep');
    expect(first).toEqual({ code: 0, stdout: 'a.conf\nb.conf\nc.conf\nrjobtest\n', stderr: '' });
    expect(await s.rjob('receive', '-s', 's1', 'audit', '--keep')).toEqual(first);
    // The job is not in the local agent.
    expect((await s.rjob('get', 'audit')).code).toBe(ExitCode.NotFound);
    // ComputerName is the alias as given; RemoteHost what the host calls itself. The local agent
    // holds the session open between commands.
    expect((await s.rjob('session', 'list')).stdout).toMatch(
      new RegExp(`s1\\s+ssh\\s+server01\\s+${hostname().replace(/\./g, '\\.')}\\s+Opened`),
    );
    expect((await s.rjob('session', 'remove', 's1')).code).toBe(0);
    expect((await s.rjob('get', '-s', 's1')).code).toBe(ExitCode.NotFound);
  });

  it('RJOB_REMOTE_SOCKET reaches the running remote agent through its socket', async () => {
    await using s = await sandbox(env());
    // The first command starts the remote daemon through the agent command.
    expect((await s.rjob('invoke', '-c', 'server01', '--', 'echo started')).code).toBe(0);
    // A command that cannot start any agent: only the socket can answer now. The real bin, with
    // a cache home of its own: ssh2 is compiled from its own script, whose code cache the first
    // run writes and the second reads (docs/decisions.md, "CLI start-up").
    const cache = join(s.dir, 'xdg-cache');
    const bin = () =>
      s.bin(['invoke', '-c', 'server01,server02', '--', 'echo direct'], {
        env: {
          RJOB_REMOTE_AGENT: 'exit 97',
          RJOB_REMOTE_SOCKET: join(remoteState, 'agent.sock'),
          XDG_CACHE_HOME: cache,
        },
      });
    const direct = await bin();
    expect(direct.code).toBe(0);
    expect(direct.stdout.split('\n').filter(Boolean).sort()).toEqual([
      '[server01] direct',
      '[server02] direct',
    ]);
    const label = (name: string) => name.replace(/^cli-[0-9a-f]{8}-[0-9a-f]{8}-/, '');
    const cached = (await readdir(join(cache, 'rjob'))).sort((a, b) => label(a).localeCompare(label(b)));
    expect(cached).toEqual([
      expect.stringMatching(/^cli-[0-9a-f]{8}-[0-9a-f]{8}-invoke\.v8$/),
      expect.stringMatching(/^cli-[0-9a-f]{8}-[0-9a-f]{8}-lib-ssh2\.v8$/),
    ]);
    const ssh2Cache = await readFile(join(cache, 'rjob', cached[1]!));
    expect(ssh2Cache.byteLength).toBeGreaterThan(10_000);
    const again = await bin();
    expect({ code: again.code, stdout: again.stdout.split('\n').sort() }).toEqual({
      code: 0,
      stdout: direct.stdout.split('\n').sort(),
    });
    // Read, not written again.
    expect(await readFile(join(cache, 'rjob', cached[1]!))).toEqual(ssh2Cache);
  });

  it('invoke fans out with per-host prefixes; an unreachable host is summarized and sets exit 4', async () => {
    await using s = await sandbox(env());
    const ok = await s.rjob('invoke', '-c', 'server01,server02', '--', 'echo one; echo two');
    expect(ok.code).toBe(0);
    const lines = ok.stdout.split('\n').filter(Boolean).sort();
    expect(lines).toEqual(['[server01] one', '[server01] two', '[server02] one', '[server02] two']);
    expect(ok.stderr).toBe('rjob: 2 hosts: 2 succeeded, 0 failed, 0 unreachable\n');

    const mixed = await s.rjob('invoke', '-c', 'server01,down', '--', 'echo up');
    expect(mixed.code).toBe(ExitCode.Unreachable);
    expect(mixed.stdout).toBe('[server01] up\n');
    expect(mixed.stderr).toMatch(/^\[down\] UNREACHABLE: .*\(ERR_SSH_CONNECT_REFUSED\)$/m);
    expect(mixed.stderr).toMatch(/1 succeeded, 0 failed, 1 unreachable\n$/);

    const failed = await s.rjob('invoke', '-c', 'server01', '--', 'exit 7');
    expect(failed.code).toBe(ExitCode.JobFailed);
    expect(failed.stderr).toMatch(/^rjob: server01: .*7.* \(ERR_JOB_EXIT_CODE\)\n$/);
  });

  it('S2: enter a host, start a job there, write its output to a file on that host', async () => {
    await using s = await sandbox(env());
    const file = join(remoteState, 'events.txt');
    const input = [
      "start --name events -- 'echo e1; id -un'",
      'wait events',
      'get',
      `receive events > ${file}`,
      'exit',
      '',
    ].join('\n');
    const out = await s.pty(['enter', 'server01'], input);
    const screen = out.stdout.replace(/\u001b\[[0-9;]*[A-Za-z]/g, '').replace(/\r/g, '');
    expect(out.code).toBe(0);
    expect(screen).toContain('[server01] rjob> ');
    expect(screen).toMatch(/events\s+BackgroundJob\s+Completed\s+True\s+localhost/);
    // Written by the remote user on the remote side, read back through a fresh invoke.
    const back = await s.rjob('invoke', '-c', 'server01', '--no-prefix', '--', `cat ${file}`);
    expect(back).toEqual({ code: 0, stdout: 'e1\nrjobtest\n', stderr: '' });
  });

  it('S3: invoke --as-job is a RemoteJob with a child per host; a down host fails its child with its coded reason', async () => {
    await using s = await sandbox(env());
    const started = await s.rjob(
      'invoke',
      '-c',
      'server01,server02,down,stranger',
      '--as-job',
      '--name',
      'sys',
      '--',
      'uname -s',
    );
    expect(started.code).toBe(0);
    expect(started.stdout).toMatch(
      /sys\s+RemoteJob\s+\w+\s+True\s+server01,server02,down,stranger\s+uname -s\n$/,
    );
    const waited = await s.rjob('wait', 'sys', '--json');
    const [parent] = JSON.parse(waited.stdout) as Array<{
      id: number;
      state: string;
      reason?: { code: string };
    }>;
    expect(parent).toMatchObject({ state: 'Failed', reason: { code: 'ERR_CHILD_JOB_FAILED' } });

    const listed = await s.rjob('get', 'sys', '--children', '--json');
    const jobs = JSON.parse(listed.stdout) as Array<{
      name: string;
      type: string;
      state: string;
      location: string;
      command: string;
      reason?: { code: string; message: string; exitCode?: number };
    }>;
    expect(jobs.map((job) => [job.name, job.type, job.location, job.state, job.command])).toEqual([
      ['sys', 'RemoteJob', 'server01,server02,down,stranger', 'Failed', 'uname -s'],
      ['server01', 'RemoteJob', 'server01', 'Completed', 'uname -s'],
      ['server02', 'RemoteJob', 'server02', 'Completed', 'uname -s'],
      ['down', 'RemoteJob', 'down', 'Failed', 'uname -s'],
      ['stranger', 'RemoteJob', 'stranger', 'Failed', 'uname -s'],
    ]);
    // Each failed child carries its host's own coded reason, not the per-host CLI's exit code.
    expect(jobs[3]!.reason).toEqual({
      code: 'ERR_SSH_CONNECT_REFUSED',
      message: expect.stringMatching(/^down: .*connection refused/),
    });
    expect(jobs[4]!.reason).toEqual({
      code: 'ERR_SSH_HOST_KEY_UNKNOWN',
      message: expect.stringMatching(/^stranger: /),
    });

    const received = await s.rjob('receive', 'sys');
    expect(received.code).toBe(ExitCode.JobFailed);
    expect(received.stdout).toBe('[server01] Linux\n[server02] Linux\n');
    // The down host's reason is its child's failure, said once.
    expect(received.stderr).toMatch(/^\[down\] FAILED: down: .+ \(ERR_SSH_CONNECT_REFUSED\)$/m);
    expect(received.stderr).toMatch(/^\[stranger\] FAILED: stranger: .+ \(ERR_SSH_HOST_KEY_UNKNOWN\)$/m);
    expect(received.stderr.match(/ERR_SSH_CONNECT_REFUSED/g)).toHaveLength(1);
  });

  it('invoke --as-job: a remote exit code stays ERR_JOB_EXIT_CODE with that code; remote output cannot set the reason', async () => {
    await using s = await sandbox(env());
    // What the per-host CLI writes on its reason channel, imitated by the remote command on its
    // stdout, its stderr and (where nothing is open) its descriptor 3.
    const forged = '{"code":"ERR_FORGED","message":"server01: forged by the remote command","exitCode":99}';
    const command = `echo out; echo '${forged}'; echo '${forged}' >&2; { echo '${forged}' >&3; } 2>/dev/null; exit 3`;
    const started = await s.rjob('invoke', '-c', 'server01', '--as-job', '--name', 'codes', '--', command);
    expect(started.code).toBe(0);
    await s.rjob('wait', 'codes');

    const listed = await s.rjob('get', 'codes', '--children', '--json');
    const [parent, child] = JSON.parse(listed.stdout) as Array<{
      state: string;
      reason?: { code: string; message: string; exitCode?: number };
    }>;
    expect(parent).toMatchObject({ state: 'Failed', reason: { code: 'ERR_CHILD_JOB_FAILED' } });
    expect(child).toMatchObject({
      state: 'Failed',
      reason: { code: 'ERR_JOB_EXIT_CODE', exitCode: 3, message: 'server01: Process exited with code 3' },
    });

    const received = await s.rjob('receive', 'codes');
    expect(received.code).toBe(ExitCode.JobFailed);
    expect(received.stdout).toBe(`[server01] out\n[server01] ${forged}\n`);
    expect(received.stderr).toContain(`[server01] ${forged}\n`);
    expect(received.stderr).toContain(
      '[server01] FAILED: server01: Process exited with code 3 (ERR_JOB_EXIT_CODE)\n',
    );
    expect(received.stderr).not.toMatch(/FAILED: .*ERR_FORGED/);
  });

  it('a refused host key is one line and exit 4', async () => {
    await using s = await sandbox(env());
    const out = await s.rjob('invoke', '-c', 'stranger', '--', 'true');
    expect(out.code).toBe(ExitCode.Unreachable);
    expect(out.stderr).toMatch(/^rjob: stranger: .+ \(ERR_SSH_HOST_KEY_UNKNOWN\)\n$/);
    const session = await s.rjob('session', 'new', 'stranger');
    expect(session.code).toBe(ExitCode.Unreachable);
    expect(session.stderr).toMatch(/^rjob: .+ \(ERR_SSH_HOST_KEY_UNKNOWN\)\n$/);
  });
});
