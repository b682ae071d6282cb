/**
 * `rjob invoke --as-job` run by the local agent itself (one RemoteJob per host, no CLI process per
 * host), through the real bin and in-process CLI, against OpenSSH sshd on loopback: hosts as
 * ssh_config aliases and as `user@host:port`, values kept as values, stop / remove --force leaving
 * nothing on the remote host, several fan-outs started at once by different CLI processes, the
 * agent killed during a fan-out; and Ctrl-C of a plain (foreground) invoke.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type SshdFixture, sshdUnavailableReason, startSshd } from '@rjob/transport-ssh/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from './io.js';
import { alive, stopDaemonIn } from './testing/daemon.js';
import { BIN, sandbox } from './testing/sandbox.js';

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

/** Pids of the test user's processes whose whole command line is `command` (not the shell running it). */
function remotePids(command: string): number[] {
  const out = spawnSync('pgrep', ['-u', fixture!.user, '-f', `^${command}$`], { encoding: 'utf8' });
  return out.stdout.split('\n').filter(Boolean).map(Number);
}

/** Waits (bounded) until `count` remote processes match `pattern`: the work has begun there. */
async function untilRemote(pattern: string, count: number): Promise<void> {
  for (let i = 0; i < 600 && remotePids(pattern).length < count; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  expect(remotePids(pattern)).toHaveLength(count);
}

/** Remote processes a test left on purpose (the agent killed under them), ended by their pids. */
const leftRemote: string[] = [];

describe.skipIf(skip !== undefined)(
  'invoke --as-job in the local agent, over sshd',
  { timeout: 180_000 },
  () => {
    beforeAll(async () => {
      fixture = await startSshd();
      remoteState = await mkdtemp(join(tmpdir(), 'rjob-asjob-remote-'));
      const uid = Number(execFileSync('id', ['-u', fixture.user]).toString().trim());
      const gid = Number(execFileSync('id', ['-g', fixture.user]).toString().trim());
      await chown(remoteState, uid, gid);
      await chmod(remoteState, 0o700);
      home = await mkdtemp(join(tmpdir(), 'rjob-asjob-home-'));
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
          // `user@127.0.0.1:port` is written out in full: only the key and known_hosts come from here.
          `Host 127.0.0.1\n  IdentityFile ${fixture.clientKeyPath}\n  UserKnownHostsFile ${knownHosts}\n` +
          'Host *\n  StrictHostKeyChecking yes\n  GlobalKnownHostsFile /dev/null\n',
      );
    });

    afterEach(() => {
      for (const pattern of leftRemote.splice(0)) {
        for (const pid of remotePids(pattern)) process.kill(pid, 'SIGKILL');
      }
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

    it("aliases and user@host:port; a thread job's object and Date come back as values, a down host fails with its code", async () => {
      await using s = await sandbox(env());
      const direct = `${fixture!.user}@127.0.0.1:${fixture!.port}`;
      const work = ['--type', 'thread', '--eval', "yield { a: 1, when: new Date(0), tags: new Set(['x']) }"];
      const started = await s.bin([
        'invoke',
        '-c',
        `server01,${direct},down`,
        '--as-job',
        '--name',
        'vals',
        ...work,
      ]);
      expect(started.stderr).toBe('');
      expect(started.code).toBe(ExitCode.Ok);
      expect((await s.rjob('wait', 'vals')).code).toBe(ExitCode.Ok);

      const children = JSON.parse((await s.rjob('get', 'vals', '--children', '--json')).stdout) as Array<{
        name: string;
        state: string;
        location: string;
        reason?: { code: string; message: string };
      }>;
      expect(children.map((job) => [job.name, job.location, job.state, job.reason?.code])).toEqual([
        ['vals', `server01,${direct},down`, 'Failed', 'ERR_CHILD_JOB_FAILED'],
        ['server01', 'server01', 'Completed', undefined],
        [direct, direct, 'Completed', undefined],
        ['down', 'down', 'Failed', 'ERR_SSH_CONNECT_REFUSED'],
      ]);
      expect(children[3]!.reason?.message).toMatch(/^down: .*connection refused/);

      // As records: objects with a Date and a Set (as JSON: an ISO string and an array), not text.
      const ndjson = await s.rjob('receive', 'vals', '--keep', '--ndjson');
      const records = ndjson.stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as { stream: string; data: unknown; location: string });
      const outputs = records.filter((record) => record.stream === 'output');
      expect(outputs.map((record) => [record.location, record.data]).sort()).toEqual([
        [direct, { a: 1, when: '1970-01-01T00:00:00.000Z', tags: ['x'] }],
        ['server01', { a: 1, when: '1970-01-01T00:00:00.000Z', tags: ['x'] }],
      ]);
      // As text, each host's line is what a plain invoke prints for it.
      const plain = await s.rjob('invoke', '-c', `server01,${direct}`, ...work);
      expect(plain.code).toBe(ExitCode.Ok);
      const received = await s.rjob('receive', 'vals');
      expect(received.code).toBe(ExitCode.JobFailed);
      expect(received.stdout.split('\n').filter(Boolean).sort()).toEqual(
        plain.stdout.split('\n').filter(Boolean).sort(),
      );
      expect(received.stdout).toContain(
        "[server01] { a: 1, when: 1970-01-01T00:00:00.000Z, tags: Set(1) { 'x' } }",
      );
      expect(received.stderr).toMatch(/^\[down\] FAILED: down: .+ \(ERR_SSH_CONNECT_REFUSED\)$/m);
    });

    it('stop and remove --force end the remote commands: nothing is left running on the host', async () => {
      await using s = await sandbox(env());
      const started = await s.rjob(
        'invoke',
        '-c',
        'server01,server02',
        '--as-job',
        '--name',
        'st',
        '--',
        'sleep 7311',
      );
      expect(started.code).toBe(ExitCode.Ok);
      await untilRemote('sleep 7311', 2);
      const stopped = await s.rjob('stop', 'st');
      expect(stopped.code).toBe(ExitCode.Ok);
      expect(stopped.stdout).toMatch(/st\s+RemoteJob\s+Stopped/);
      expect(remotePids('sleep 7311')).toEqual([]);
      const children = JSON.parse((await s.rjob('get', 'st', '--children', '--json')).stdout) as Array<{
        state: string;
      }>;
      expect(children.map((job) => job.state)).toEqual(['Stopped', 'Stopped', 'Stopped']);

      await s.rjob('invoke', '-c', 'server01', '--as-job', '--name', 'rm', '--', 'sleep 7312');
      await untilRemote('sleep 7312', 1);
      const refused = await s.rjob('remove', 'rm');
      expect(refused.code).toBe(ExitCode.Refused);
      expect(remotePids('sleep 7312')).toHaveLength(1);
      expect((await s.rjob('remove', 'rm', '--force')).code).toBe(ExitCode.Ok);
      expect(remotePids('sleep 7312')).toEqual([]);
      expect((await s.rjob('get', 'rm')).code).toBe(ExitCode.NotFound);
    });

    it('several --as-job fan-outs started at once by different CLI processes each get their own results', async () => {
      await using s = await sandbox(env());
      // The first command starts the agent; the others race each other on it.
      await s.rjob('get');
      const names = ['p1', 'p2', 'p3', 'p4'];
      const started = await Promise.all(
        names.map((name) =>
          s.bin(['invoke', '-c', 'server01,server02', '--as-job', '--name', name, '--', `echo ${name}`]),
        ),
      );
      for (const run of started) expect(run).toMatchObject({ code: ExitCode.Ok, stderr: '' });
      const waited = JSON.parse((await s.rjob('wait', ...names, '--json')).stdout) as Array<{
        id: number;
        name: string;
        state: string;
      }>;
      expect(waited.map((job) => [job.name, job.state]).sort()).toEqual(
        names.map((name) => [name, 'Completed']),
      );
      expect(new Set(waited.map((job) => job.id)).size).toBe(names.length);
      for (const name of names) {
        const received = await s.rjob('receive', name);
        expect(received.stdout.split('\n').filter(Boolean).sort()).toEqual([
          `[server01] ${name}`,
          `[server02] ${name}`,
        ]);
      }
    });

    it('the agent killed during a fan-out: the next command shows the job and its children Failed, coded', async () => {
      await using s = await sandbox(env());
      leftRemote.push('sleep 7314');
      await s.rjob('invoke', '-c', 'server01,server02', '--as-job', '--name', 'k', '--', 'sleep 7314');
      await untilRemote('sleep 7314', 2);
      const pid = Number((await readFile(join(s.dir, 'agent.pid'), 'utf8')).trim());
      process.kill(pid, 'SIGKILL');
      for (let i = 0; i < 200 && alive(pid); i++) await new Promise((resolve) => setTimeout(resolve, 20));
      expect(alive(pid)).toBe(false);

      // A new agent starts and restores the group: nothing hangs in Running.
      const listed = await s.rjob('get', 'k', '--children', '--json');
      expect(listed.code).toBe(ExitCode.Ok);
      const jobs = JSON.parse(listed.stdout) as Array<{
        name: string;
        state: string;
        reason?: { code: string };
      }>;
      expect(jobs.map((job) => [job.name, job.state, job.reason?.code])).toEqual([
        ['k', 'Failed', 'ERR_CHILD_JOB_FAILED'],
        ['server01', 'Failed', 'ERR_AGENT_RESTARTED'],
        ['server02', 'Failed', 'ERR_AGENT_RESTARTED'],
      ]);
      const waited = await s.rjob('wait', 'k');
      expect(waited.code).toBe(ExitCode.Ok);
      expect(waited.stdout).toMatch(/k\s+RemoteJob\s+Failed/);
    });

    it('Ctrl-C on a foreground invoke stops the remote commands and prints the summary', async () => {
      await using s = await sandbox(env());
      const child = spawn(
        process.execPath,
        [BIN, 'invoke', '-c', 'server01,server02', '--', 'echo begun; sleep 7315'],
        {
          cwd: s.dir,
          env: s.env,
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk));
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk));
      const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
      try {
        await untilRemote('sleep 7315', 2);
        child.kill('SIGINT');
        expect(await exited).toBe(ExitCode.Interrupted);
      } finally {
        child.kill('SIGKILL');
      }
      expect(stdout.split('\n').filter(Boolean).sort()).toEqual(['[server01] begun', '[server02] begun']);
      const lines = stderr.split('\n').filter(Boolean);
      expect(lines.filter((line) => line.includes('(ERR_INTERRUPTED)')).sort()).toEqual([
        expect.stringMatching(/^\[server01\] INTERRUPTED: /),
        expect.stringMatching(/^\[server02\] INTERRUPTED: /),
      ]);
      expect(lines.at(-1)).toBe('rjob: 2 hosts: 0 succeeded, 0 failed, 0 unreachable, 2 interrupted');
      expect(remotePids('sleep 7315')).toEqual([]);
    });

    describe('sessions the local agent holds', () => {
      const loop = (n: number): string => `for i in $(seq ${n}); do sleep 0.1; echo "Output $i"; done`;
      const logins = (): number => (fixture!.logs().match(/Accepted publickey/g) ?? []).length;

      it('S5 with an alias and user@host:port: invoke -s --as-job shows Disconnected with its session, then every line once', async () => {
        await using s = await sandbox(env());
        for (const [i, target] of ['server01', `${fixture!.user}@127.0.0.1:${fixture!.port}`].entries()) {
          const bg = `bg${i}`;
          const created = await s.rjob('session', 'new', target, '--name', bg);
          expect(created.stderr).toBe('');
          expect(created.stdout).toMatch(new RegExp(`${bg}\\s+ssh\\s+\\S+\\s+\\S+\\s+Opened`));
          const started = await s.rjob('invoke', '-s', bg, '--as-job', '--name', `loop${i}`, '--', loop(30));
          expect(started).toMatchObject({ code: 0, stderr: '' });
          expect(started.stdout).toMatch(
            new RegExp(`loop${i}\\s+RemoteJob\\s+\\w+\\s+\\w+\\s+${target.replace(/\./g, '\\.')}\\s`),
          );
          // Running once the host started it (the remote start crosses sshd).
          for (
            let n = 0;
            n < 200 && !/RemoteJob\s+Running\s/.test((await s.rjob('get', `loop${i}`)).stdout);
            n++
          );
          expect((await s.rjob('get', `loop${i}`)).stdout).toMatch(/RemoteJob\s+Running\s/);
          expect((await s.rjob('session', 'disconnect', bg)).stdout).toMatch(/Disconnected/);
          expect((await s.rjob('get', `loop${i}`)).stdout).toMatch(/RemoteJob\s+Disconnected\s/);
          // The command goes on on the host while nobody is connected; its lines wait there.
          await new Promise((resolve) => setTimeout(resolve, 1000));
          expect((await s.rjob('session', 'connect', bg)).stdout).toMatch(/Opened/);
          const received = await s.rjob('receive', `loop${i}`, '--wait');
          expect(received.stderr).toBe('');
          expect(received.stdout).toBe(
            Array.from({ length: 30 }, (_, n) => `[${target}] Output ${n + 1}\n`).join(''),
          );
          expect((await s.rjob('get', `loop${i}`)).stdout).toMatch(/RemoteJob\s+Completed\s+False\s/);
          expect((await s.rjob('session', 'remove', bg)).code).toBe(0);
        }
      });

      it('-s verbs from parallel commands share the held connection (no new login); stop leaves nothing running', async () => {
        await using s = await sandbox(env());
        expect((await s.rjob('session', 'new', 'server01', '--name', 'h')).code).toBe(0);
        const before = logins();
        const results = await Promise.all([
          ...Array.from({ length: 4 }, (_, i) =>
            s.rjob('start', '-s', 'h', '--name', `p${i}`, '--', `echo p${i}`),
          ),
          s.rjob('get', '-s', 'h'),
          s.rjob('session', 'list'),
        ]);
        for (const result of results) expect(result).toMatchObject({ code: 0, stderr: '' });
        for (let i = 0; i < 4; i++) {
          expect(await s.rjob('receive', '-s', 'h', `p${i}`, '--wait')).toEqual({
            code: 0,
            stdout: `p${i}\n`,
            stderr: '',
          });
        }
        expect(logins()).toBe(before);

        expect((await s.rjob('invoke', '-s', 'h', '--as-job', '--name', 'sl', '--', 'sleep 7321')).code).toBe(
          0,
        );
        await untilRemote('sleep 7321', 1);
        const stopped = await s.rjob('stop', 'sl');
        expect(stopped.stdout).toMatch(/sl\s+RemoteJob\s+Stopped/);
        expect(remotePids('sleep 7321')).toEqual([]);
        expect((await s.rjob('session', 'remove', 'h')).code).toBe(0);
        expect((await s.rjob('get', '-s', 'h')).code).toBe(ExitCode.NotFound);
      });

      it('another client takes a Disconnected session over: session list -c HOST, then session connect ID -c HOST', async () => {
        await using a = await sandbox(env());
        await using b = await sandbox(env());
        expect((await a.rjob('session', 'new', 'server01', '--name', 'shared')).code).toBe(0);
        expect((await a.rjob('start', '-s', 'shared', '--name', 'w', '--', 'echo from-a')).code).toBe(0);
        expect((await a.rjob('wait', '-s', 'shared', 'w')).code).toBe(0);
        expect((await a.rjob('session', 'new', 'server01', '--name', 'busy')).code).toBe(0);

        // A session client a holds open is refused, coded; a's keeps working.
        const inUse = await b.rjob('session', 'connect', 'busy', '-c', 'server01');
        expect(inUse.code).not.toBe(0);
        expect(inUse.stderr).toMatch(/in use by another client.*\(ERR_SESSION_IN_USE\)/);
        expect((await a.rjob('get', '-s', 'busy')).code).toBe(0);

        expect((await a.rjob('session', 'disconnect', 'shared')).code).toBe(0);
        const listed = JSON.parse(
          (await b.rjob('session', 'list', '-c', 'server01', '--json')).stdout,
        ) as Array<{
          name: string;
          state: string;
        }>;
        expect(listed.find((row) => row.name === 'shared')?.state).toBe('Disconnected');
        const taken = await b.rjob('session', 'connect', 'shared', '-c', 'server01');
        expect(taken).toMatchObject({ code: 0, stderr: '' });
        expect(taken.stdout).toMatch(/shared\s+ssh\s+server01\s+\S+\s+Opened/);
        expect(await b.rjob('receive', '-s', 'shared', 'w')).toEqual({
          code: 0,
          stdout: 'from-a\n',
          stderr: '',
        });
        // a's credentials stopped working: it is told how to forget the session.
        const gone = await a.rjob('get', '-s', 'shared');
        expect(gone.code).toBe(ExitCode.NotFound);
        expect(gone.stderr).toMatch(/session shared no longer exists on server01/);
        expect((await b.rjob('session', 'remove', 'shared')).code).toBe(0);
        expect((await a.rjob('session', 'remove', 'busy')).code).toBe(0);
      });

      it('after the local agent restarts, -s verbs take the session up again from the stored credentials', async () => {
        await using s = await sandbox(env());
        expect((await s.rjob('session', 'new', 'server01', '--name', 'r')).code).toBe(0);
        expect((await s.rjob('start', '-s', 'r', '--name', 'kept', '--', 'echo kept')).code).toBe(0);
        expect((await s.rjob('agent', 'stop')).stdout).toBe('agent stopped\n');
        // A RemoteJob is the first to take the session up again; the client's verbs share it.
        expect((await s.rjob('invoke', '-s', 'r', '--as-job', '--name', 'aj', '--', 'echo aj')).code).toBe(0);
        expect((await s.rjob('receive', 'aj', '--wait')).stdout).toBe('[server01] aj\n');
        // The job lives on the host: the restarted local agent connects the session again.
        expect(await s.rjob('receive', '-s', 'r', 'kept', '--wait')).toEqual({
          code: 0,
          stdout: 'kept\n',
          stderr: '',
        });
        expect((await s.rjob('session', 'list')).stdout).toMatch(/r\s+ssh\s+server01\s+\S+\s+Opened/);
        expect((await s.rjob('session', 'remove', 'r')).code).toBe(0);
      });
    });
  },
);
