/**
 * `rjob agent status|stop -c HOST` through the real CLI against OpenSSH sshd on loopback: hosts
 * are ssh_config aliases, the remote agent is this CLI's `rjob agent --stdio` run from source by
 * the test user with a state directory of its own.
 */
import { execFileSync } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type SshdFixture, sshdUnavailableReason, startSshd } from '@rjob/transport-ssh/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from './io.js';
import { alive, stopDaemonIn } from './testing/daemon.js';
import { sandbox } from './testing/sandbox.js';
import { agentSoftware } from './version.js';

const skip = sshdUnavailableReason();
const TSX = fileURLToPath(import.meta.resolve('tsx'));
const ENTRY = fileURLToPath(new URL('./cli-entry.ts', import.meta.url));

let fixture: SshdFixture | undefined;
let home = '';
let remoteState = '';

async function unusedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function remotePid(): Promise<number | undefined> {
  const text = await readFile(join(remoteState, 'agent.pid'), 'utf8').catch(() => '');
  return text.trim() ? Number(text.trim()) : undefined;
}

/** Until the process is gone (bounded; the daemon's shutdown is not timed here). */
async function gone(pid: number): Promise<boolean> {
  for (let i = 0; i < 1500 && alive(pid); i++) await new Promise((resolve) => setTimeout(resolve, 20));
  return !alive(pid);
}

describe.skipIf(skip !== undefined)(
  'rjob agent status|stop -c HOST against sshd',
  { timeout: 180_000 },
  () => {
    beforeAll(async () => {
      fixture = await startSshd();
      remoteState = await mkdtemp(join(tmpdir(), 'rjob-cli-remote-'));
      const uid = Number(execFileSync('id', ['-u', fixture.user]).toString().trim());
      const gid = Number(execFileSync('id', ['-g', fixture.user]).toString().trim());
      await chown(remoteState, uid, gid);
      await chmod(remoteState, 0o700);
      home = await mkdtemp(join(tmpdir(), 'rjob-cli-home-'));
      await mkdir(join(home, '.ssh'), { mode: 0o700 });
      const knownHosts = join(home, '.ssh', 'known_hosts');
      await writeFile(knownHosts, `${fixture.knownHostsLine}\n`);
      const block = (alias: string, port: number): string =>
        `Host ${alias}\n  HostName 127.0.0.1\n  Port ${port}\n  User ${fixture!.user}\n  IdentityFile ${fixture!.clientKeyPath}\n  UserKnownHostsFile ${knownHosts}\n`;
      await writeFile(
        join(home, '.ssh', 'config'),
        block('server01', fixture.port) +
          block('server02', fixture.port) +
          block('down', await unusedPort()) +
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
      RJOB_REMOTE_AGENT: `TMPDIR=${remoteState} exec node --conditions=@rjob/source --import ${TSX} ${ENTRY} agent --stdio --state-dir ${remoteState}`,
    });

    it('status shows the remote agent version and pid; stop ends that daemon; the next command starts a new one', async () => {
      await using s = await sandbox(env());
      const software = await agentSoftware();
      const status = await s.bin(['agent', 'status', '-c', 'server01']);
      expect(status.code, status.stderr).toBe(ExitCode.Ok);
      const pid = await remotePid();
      expect(pid).toBeDefined();
      expect(status.stdout).toBe(
        `[server01] agent running: ${software}, pid ${pid}, up ${status.stdout.match(/up (\S+),/)?.[1]}, 0 sessions, 0 jobs (0 running), started now\n`,
      );
      // Running now: a second status reaches the same daemon.
      const second = await s.bin(['agent', 'status', '-c', 'server01']);
      expect(second.stdout).toMatch(
        new RegExp(`^\\[server01\\] agent running: .*, pid ${pid}, .*\\(0 running\\)\n$`),
      );

      const stopped = await s.bin(['agent', 'stop', '-c', 'server01']);
      expect(stopped).toMatchObject({
        code: ExitCode.Ok,
        stdout: `[server01] agent stopped (pid ${pid}, ${software})\n`,
      });
      expect(await gone(pid!)).toBe(true);

      // A new daemon starts on demand, as for any command.
      const again = await s.bin(['agent', 'status', '-c', 'server01', '--json']);
      expect(again.code, again.stderr).toBe(ExitCode.Ok);
      const [result] = JSON.parse(again.stdout) as Array<{
        host: string;
        ok: boolean;
        agent: { pid: number; software: string; sessions: number };
      }>;
      expect(result).toMatchObject({ host: 'server01', ok: true, agent: { software } });
      expect(result!.agent.pid).not.toBe(pid);
      // The sessions of the status and stop commands were closed, none was kept for the new daemon.
      expect(result!.agent.sessions).toBe(0);
      expect(result!.agent.pid).toBe(await remotePid());

      // Stopped, then stopped again: the second finds nothing running (the daemon started to
      // answer it is stopped as well).
      expect((await s.bin(['agent', 'stop', '-c', 'server01'])).code).toBe(ExitCode.Ok);
      expect(await gone(result!.agent.pid)).toBe(true);
      const twice = await s.bin(['agent', 'stop', '-c', 'server01']);
      expect(twice).toMatchObject({ code: ExitCode.Ok, stdout: '[server01] agent was not running\n' });
      const started = await remotePid();
      if (started !== undefined) expect(await gone(started)).toBe(true);
    });

    it('two hosts and a down one: each reported, the down one with its code, exit 4', async () => {
      await using s = await sandbox(env());
      const out = await s.bin(['agent', 'status', '-c', 'server01,down', '-c', 'server02']);
      expect(out.code).toBe(ExitCode.Unreachable);
      const lines = out.stdout.split('\n').filter(Boolean);
      expect(lines).toHaveLength(3);
      expect(lines[0]).toMatch(/^\[server01\] agent running: rjob\/\S+, pid \d+, /);
      expect(lines[1]).toMatch(/^\[down\] UNREACHABLE: .*\(ERR_SSH_CONNECT_REFUSED\)$/);
      expect(lines[2]).toMatch(/^\[server02\] agent running: rjob\/\S+, pid \d+, /);

      const json = await s.bin(['agent', 'status', '-c', 'down', '--json']);
      expect(json.code).toBe(ExitCode.Unreachable);
      expect(JSON.parse(json.stdout)).toEqual([
        {
          host: 'down',
          ok: false,
          error: { code: 'ERR_SSH_CONNECT_REFUSED', message: expect.any(String), unreachable: true },
        },
      ]);
    });

    it('status counts the sessions held there; no host is a usage error', async () => {
      await using s = await sandbox(env());
      expect((await s.rjob('session', 'new', 'server01', '--name', 'held')).code).toBe(0);
      const out = await s.bin(['agent', 'status', '-c', 'server02', '--json']);
      const [result] = JSON.parse(out.stdout) as Array<{ agent: { sessions: number } }>;
      expect(result!.agent.sessions).toBe(1);
      expect((await s.rjob('session', 'remove', 'held')).code).toBe(0);

      const usage = await s.rjob('agent', 'stop', '-c', '');
      expect(usage.code).toBe(ExitCode.Usage);
      expect(usage.stderr).toMatch(/^rjob: no computer given \(ERR_USAGE\)\n$/);
    });
  },
);
