/**
 * Fleet fan-out (issue 16) against real OpenSSH sshd on loopback: 200 ssh_config aliases over four
 * sshd instances with 10 hosts down, inventories with groups and `--limit`, `--out-dir` files,
 * `--timeout` ending the remote command, `--connect-timeout`, the progress line counting finished
 * hosts, and ssh_config ProxyCommand (honoured, and its failure reported with a code).
 *
 * The hosts reach one agent daemon (one machine, one user) through its socket (RJOB_REMOTE_SOCKET,
 * sshd's socket forwarding: no process per connection); RJOB_REMOTE_AGENT is a command that fails,
 * so a host that did not take the socket path would show up as a failure.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type SshdFixture, sshdUnavailableReason, startSshds } from '@rjob/transport-ssh/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from './io.js';
import { stopDaemonIn } from './testing/daemon.js';
import { sandbox } from './testing/sandbox.js';

const skip = sshdUnavailableReason();
const TSX = fileURLToPath(import.meta.resolve('tsx'));
const ENTRY = fileURLToPath(new URL('./cli-entry.ts', import.meta.url));

const HOSTS = 200;
const ALIASES = Array.from({ length: HOSTS }, (_, i) => `h${String(i + 1).padStart(3, '0')}`);
/** Every 20th host points at a port nothing listens on. */
const DOWN = new Set(ALIASES.filter((_, i) => i % 20 === 7));

/** A ProxyCommand: logs its arguments, then carries the connection to host:port. */
const PROXY = `
const net = require('node:net');
const fs = require('node:fs');
const [host, port, user, log] = process.argv.slice(2);
fs.appendFileSync(log, host + ' ' + port + ' ' + user + '\\n');
const socket = net.connect(Number(port), host);
process.stdin.pipe(socket);
socket.pipe(process.stdout);
socket.on('close', () => process.exit(0));
socket.on('error', () => process.exit(1));
`;

let farm: (SshdFixture[] & { stopAll(): Promise<void> }) | undefined;
let home = '';
let remoteState = '';
let toolDir = '';
let silent: Server | undefined;
const silentSockets = new Set<Socket>();

async function unusedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const ESCAPES = /\u001b\[[0-9;]*[A-Za-z]/g;

describe.skipIf(skip !== undefined)('rjob invoke to a fleet of sshd hosts', { timeout: 240_000 }, () => {
  beforeAll(async () => {
    farm = await startSshds(['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5'], {
      extraConfig: ['MaxStartups 100', 'MaxSessions 64'],
    });
    const user = farm[0]!.user;
    remoteState = await mkdtemp(join(tmpdir(), 'rjob-fleet-remote-'));
    const uid = Number(execFileSync('id', ['-u', user]).toString().trim());
    const gid = Number(execFileSync('id', ['-g', user]).toString().trim());
    await chown(remoteState, uid, gid);
    await chmod(remoteState, 0o700);
    toolDir = await mkdtemp(join(tmpdir(), 'rjob-fleet-tools-'));
    await writeFile(join(toolDir, 'proxy.cjs'), PROXY);
    // Accepts TCP and never says a word: what --connect-timeout is for.
    silent = createServer((socket) => {
      silentSockets.add(socket);
      socket.on('close', () => silentSockets.delete(socket));
    });
    await new Promise<void>((resolve) => silent!.listen(0, '127.0.0.1', resolve));
    const silentPort = (silent.address() as { port: number }).port;
    const deadPort = await unusedPort();

    home = await mkdtemp(join(tmpdir(), 'rjob-fleet-home-'));
    await mkdir(join(home, '.ssh'), { mode: 0o700 });
    const knownHosts = join(home, '.ssh', 'known_hosts');
    await writeFile(knownHosts, farm.map((h) => `${h.knownHostsLine}\n`).join(''));
    const up = farm[0]!;
    await writeFile(
      join(home, '.ssh', 'config'),
      ALIASES.map((alias, i) => {
        const f = farm![i % farm!.length]!;
        return DOWN.has(alias)
          ? `Host ${alias}\n  HostName 127.0.0.1\n  Port ${deadPort}\n`
          : `Host ${alias}\n  HostName ${f.host}\n  Port ${f.port}\n`;
      }).join('') +
        `Host viaproxy\n  HostName ${up.host}\n  Port ${up.port}\n` +
        `  ProxyCommand ${process.execPath} ${join(toolDir, 'proxy.cjs')} %h %p %r ${join(toolDir, 'proxy.log')}\n` +
        `Host badproxy\n  HostName ${up.host}\n  Port ${up.port}\n` +
        `  ProxyCommand sh -c 'echo no route to %h >&2; exit 3'\n` +
        `Host silent\n  HostName 127.0.0.1\n  Port ${silentPort}\n` +
        `Host *\n  User ${user}\n  IdentityFile ${up.clientKeyPath}\n  UserKnownHostsFile ${knownHosts}\n` +
        '  StrictHostKeyChecking yes\n  GlobalKnownHostsFile /dev/null\n  ConnectTimeout 120\n',
    );
    // Start the one agent daemon all the hosts share, through the real `rjob agent --stdio`.
    await using s = await sandbox({
      HOME: home,
      SSH_AUTH_SOCK: '',
      RJOB_REMOTE_AGENT: `TMPDIR=${remoteState} exec node --conditions=@rjob/source --import ${TSX} ${ENTRY} agent --stdio --state-dir ${remoteState}`,
    });
    // A first agent start from source (tsx) on a busy machine may take longer than the 10 s
    // handshake default; --connect-timeout bounds the handshake too.
    const warm = await s.rjob('invoke', '-c', 'h001', '--connect-timeout', '2m', '--', 'true');
    expect(warm).toEqual({ code: 0, stdout: '', stderr: '' });
  });

  afterAll(async () => {
    for (const socket of silentSockets) socket.destroy();
    await new Promise((resolve) => (silent ? silent.close(resolve) : resolve(undefined)));
    if (remoteState) await stopDaemonIn(remoteState);
    await farm?.stopAll();
    for (const dir of [remoteState, toolDir, home]) if (dir) await rm(dir, { recursive: true, force: true });
  });

  const env = (): NodeJS.ProcessEnv => ({
    HOME: home,
    SSH_AUTH_SOCK: '',
    RJOB_REMOTE_SOCKET: join(remoteState, 'agent.sock'),
    // Never reached while the socket answers; if it were, the host would fail with exit 97.
    RJOB_REMOTE_AGENT: 'exit 97',
  });

  it('200 hosts, 10 down: 190 results and 10 coded failures in the summary', async () => {
    await using s = await sandbox(env());
    await writeFile(join(s.dir, 'hosts.txt'), `${ALIASES.join('\n')}\n`);
    const result = await s.rjob('invoke', '-c', '@hosts.txt', '--', 'echo ok');
    expect(result.code, result.stderr).toBe(ExitCode.Unreachable);
    const lines = result.stdout.split('\n').filter(Boolean);
    expect(lines.sort()).toEqual(ALIASES.filter((a) => !DOWN.has(a)).map((a) => `[${a}] ok`));
    const stderr = result.stderr.split('\n').filter(Boolean);
    expect(stderr.at(-1)).toBe(`rjob: ${HOSTS} hosts: 190 succeeded, 0 failed, 10 unreachable`);
    const failures = stderr.slice(0, -1);
    expect(failures).toHaveLength(10);
    for (const line of failures)
      expect(line).toMatch(/^\[h\d{3}\] UNREACHABLE: .* \(ERR_SSH_CONNECT_REFUSED\)$/);
    expect(failures.map((line) => line.slice(1, 5)).sort()).toEqual([...DOWN].sort());
  });

  it('inventory groups and --limit pick the hosts; --out-dir writes a .out and .err per host', async () => {
    await using s = await sandbox(env());
    await writeFile(
      join(s.dir, 'inventory.ini'),
      '[web]\nh[001:004]\n[db]\nh005\nh006\n[broken]\nh008   # down\n[prod:children]\nweb\ndb\nbroken\n',
    );
    const result = await s.rjob(
      'invoke',
      '-c',
      '@inventory.ini:prod',
      '--limit',
      '!h002:!db',
      '--out-dir',
      'out',
      '--',
      'echo hello; echo oops >&2',
    );
    expect(result.code, result.stderr).toBe(ExitCode.Unreachable);
    // Nothing on stdout: the lines are in the files.
    expect(result.stdout).toBe('');
    expect(result.stderr.split('\n').filter(Boolean).at(-1)).toBe(
      'rjob: 4 hosts: 3 succeeded, 0 failed, 1 unreachable',
    );
    const out = join(s.dir, 'out');
    expect((await readdir(out)).sort()).toEqual(
      ['h001', 'h003', 'h004', 'h008'].flatMap((h) => [`${h}.err`, `${h}.out`]),
    );
    for (const host of ['h001', 'h003', 'h004']) {
      expect(await readFile(join(out, `${host}.out`), 'utf8')).toBe('hello\n');
      expect(await readFile(join(out, `${host}.err`), 'utf8')).toBe('oops\n');
    }
    expect(await readFile(join(out, 'h008.out'), 'utf8')).toBe('');
    expect(await readFile(join(out, 'h008.err'), 'utf8')).toMatch(/^FAILED: .*ERR_SSH_CONNECT_REFUSED/);

    // A pattern that selects nothing is a usage error, not an empty success.
    const none = await s.rjob('invoke', '-c', '@inventory.ini', '--limit', 'nope*', '--', 'true');
    expect(none.code).toBe(ExitCode.Usage);
    expect(none.stderr).toMatch(/--limit nope\* selects none of the 7 hosts/);
  });

  it('--timeout ends the remote command: the host fails with ERR_JOB_TIMEOUT and its sleep is gone', async () => {
    await using s = await sandbox(env());
    const result = await s.rjob(
      'invoke',
      '-c',
      'h001,h002',
      '--timeout',
      '1s',
      '--',
      'echo begun; sleep 4321',
    );
    expect(result.code).toBe(ExitCode.JobFailed);
    expect(result.stdout.split('\n').filter(Boolean).sort()).toEqual(['[h001] begun', '[h002] begun']);
    const stderr = result.stderr.split('\n').filter(Boolean);
    expect(stderr.filter((line) => line.includes('(ERR_JOB_TIMEOUT)'))).toHaveLength(2);
    expect(stderr.at(-1)).toBe('rjob: 2 hosts: 0 succeeded, 2 failed, 0 unreachable');
    const pgrep = spawnSync('pgrep', ['-u', farm![0]!.user, '-f', 'sleep 4321'], { encoding: 'utf8' });
    expect(pgrep.stdout).toBe('');
    expect(pgrep.status).toBe(1);

    // With --as-job, each host's child carries the timeout along: its reason is the host's.
    const started = await s.rjob(
      'invoke',
      '-c',
      'h003',
      '--as-job',
      '--name',
      'tj',
      '--timeout',
      '1s',
      '--',
      'sleep 4322',
    );
    expect(started.code, started.stderr).toBe(ExitCode.Ok);
    await s.rjob('wait', 'tj');
    const got = await s.rjob('get', 'tj', '--children', '--json');
    expect(got.stdout).toMatch(/"code":"ERR_JOB_TIMEOUT"/);
    expect(spawnSync('pgrep', ['-u', farm![0]!.user, '-f', 'sleep 4322']).status).toBe(1);
  });

  it('--connect-timeout gives up on a host that never answers, with a code', async () => {
    await using s = await sandbox(env());
    // ssh_config says ConnectTimeout 120: the flag wins.
    const result = await s.rjob('invoke', '-c', 'silent', '--connect-timeout', '1s', '--', 'echo ok');
    expect(result.code).toBe(ExitCode.Unreachable);
    expect(result.stdout).toBe('');
    expect(result.stderr).toMatch(/^rjob: silent: .* \(ERR_SSH_CONNECT_TIMEOUT\)\n$/);
    // A host that answers is unaffected (a generous bound: the machine may be busy).
    const fine = await s.rjob('invoke', '-c', 'h001', '--connect-timeout', '2m', '--', 'echo ok');
    expect(fine).toMatchObject({ code: ExitCode.Ok, stdout: '[h001] ok\n' });
    const bad = await s.rjob('invoke', '-c', 'h001', '--connect-timeout', '0', '--', 'true');
    expect(bad.code).toBe(ExitCode.Usage);
  });

  it('ProxyCommand carries the connection (tokens expanded); a failing one is a coded failure', async () => {
    await using s = await sandbox(env());
    const result = await s.rjob('invoke', '-c', 'viaproxy,badproxy', '--', 'echo through');
    expect(result.code).toBe(ExitCode.Unreachable);
    expect(result.stdout).toBe('[viaproxy] through\n');
    const up = farm![0]!;
    expect(await readFile(join(toolDir, 'proxy.log'), 'utf8')).toBe(`${up.host} ${up.port} ${up.user}\n`);
    expect(result.stderr).toMatch(
      /^\[badproxy\] UNREACHABLE: .*ProxyCommand .* failed \(exit 3\): no route to 127\.0\.0\.2 \(ERR_SSH_PROXY_COMMAND\)$/m,
    );
  });

  it('on a terminal, the progress line counts hosts that are done, not hosts that answered', async () => {
    await using s = await sandbox(env());
    const tty = await s.pty(
      ['invoke', '-c', 'h001,h002,h003', '--', 'echo started; sleep 1; echo finished'],
      '',
    );
    expect(tty.code, tty.stdout).toBe(ExitCode.Ok);
    const raw = tty.stdout.replace(ESCAPES, '');
    const progressBefore = (text: string): string[] => text.match(/\d+\/3 hosts done/g) ?? [];
    const firstFinished = raw.indexOf('finished');
    expect(firstFinished).toBeGreaterThan(0);
    // Before any host finished, every redraw says none is done, however many have printed.
    expect(raw.slice(0, firstFinished)).toContain('] started');
    expect(new Set(progressBefore(raw.slice(0, firstFinished)))).toEqual(new Set(['0/3 hosts done']));
    // The count reaches 3 only after the last host's last line.
    const lastFinished = raw.lastIndexOf('finished');
    expect(progressBefore(raw.slice(0, lastFinished))).not.toContain('3/3 hosts done');
    expect(raw.slice(lastFinished)).toContain('3/3 hosts done');
  });
});
