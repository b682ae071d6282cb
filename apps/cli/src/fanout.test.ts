/**
 * `rjob invoke` to 20 loopback sshd hosts (issue 6): on a terminal it shows how many hosts are
 * done (work ended, or unreachable) while the work runs, every host's lines keep their `[host] ` prefix, and it ends with the
 * per-class summary and the unreachable exit code. Without a terminal the same run shows no
 * progress, only the lines and the summary.
 */
import { execFileSync } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type SshdFixture, sshdUnavailableReason, startSshds } from '@rjob/transport-ssh/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from './io.js';
import { sandbox } from './testing/sandbox.js';
import { stopDaemonIn } from './testing/daemon.js';

const skip = sshdUnavailableReason();
const TSX = fileURLToPath(import.meta.resolve('tsx'));
const ENTRY = fileURLToPath(new URL('./cli-entry.ts', import.meta.url));

const ALIASES = Array.from({ length: 20 }, (_, i) => `web${String(i + 1).padStart(2, '0')}`);
/** Their sshd is stopped after start: the address is real, nothing listens, so connect is refused. */
const DOWN = new Set(['web07', 'web15']);
const UP = ALIASES.filter((alias) => !DOWN.has(alias));
const COMMAND = 'hostname; echo ok';
const SUMMARY = 'rjob: 20 hosts: 18 succeeded, 0 failed, 2 unreachable';

/**
 * A cheap stand-in for `rjob agent --stdio` once its daemon runs (the same bridge as the 20-host
 * test in transport-ssh): 18 hosts each loading the CLI from source through tsx at once overload
 * the machine, while this is plain node piping the exec channel to the daemon's socket.
 */
const BRIDGE = `
const net = require('node:net');
const socket = net.connect(process.argv[2]);
process.stdin.pipe(socket);
socket.pipe(process.stdout);
socket.on('close', () => process.exit(0));
process.stdin.on('end', () => socket.end());
`;

let hosts: (SshdFixture[] & { stopAll(): Promise<void> }) | undefined;
let home = '';
let remoteState = '';
let bridgeDir = '';

const ESCAPES = /\u001b\[[0-9;]*[A-Za-z]/g;

/**
 * What a terminal ends up showing, line by line: `\r` moves to the line's start, ESC[K erases to its
 * end, text overwrites. A progress line that was not cleared, or one that split a host's line,
 * shows up here as a line that is not one of the expected ones.
 */
function screenLines(raw: string): string[] {
  return raw.split('\n').flatMap((line) => {
    let shown = '';
    let cursor = 0;
    for (const token of line.match(/\u001b\[[0-9;]*[A-Za-z]|\r|[^\r\u001b]+|\u001b/g) ?? []) {
      if (token === '\r') cursor = 0;
      else if (token === '\u001b[K') shown = shown.slice(0, cursor);
      else if (!token.startsWith('\u001b')) {
        shown = shown.slice(0, cursor) + token + shown.slice(cursor + token.length);
        cursor += token.length;
      }
    }
    return shown === '' ? [] : [shown];
  });
}

/** Every up host's two lines, in a stable order (hosts answer in any order). */
const expectedOutput = (): string[] =>
  UP.flatMap((alias) => [`[${alias}] ${hostname()}`, `[${alias}] ok`]).sort();

/** Each host's own lines keep their order: hostname first, then ok. */
function expectHostOrder(lines: string[]): void {
  for (const alias of UP) {
    const first = lines.indexOf(`[${alias}] ${hostname()}`);
    expect(first, alias).toBeGreaterThanOrEqual(0);
    expect(lines.indexOf(`[${alias}] ok`), alias).toBeGreaterThan(first);
  }
}

const unreachableLine = /^\[(web07|web15)\] UNREACHABLE: .* \(ERR_SSH_CONNECT_REFUSED\)$/;

// Twenty sshd logins and a from-source CLI on two shared cores: generous, not a timing assertion.
describe.skipIf(skip !== undefined)('rjob invoke to 20 sshd hosts', { timeout: 240_000 }, () => {
  beforeAll(async () => {
    hosts = await startSshds(ALIASES.map((_, i) => `127.0.0.${i + 2}`));
    for (const [i, alias] of ALIASES.entries()) if (DOWN.has(alias)) await hosts[i]!.stop();
    const user = hosts[0]!.user;
    // The remote agent's state belongs to the test user, as on a real host.
    remoteState = await mkdtemp(join(tmpdir(), 'rjob-fan-remote-'));
    const uid = Number(execFileSync('id', ['-u', user]).toString().trim());
    const gid = Number(execFileSync('id', ['-g', user]).toString().trim());
    await chown(remoteState, uid, gid);
    await chmod(remoteState, 0o700);
    // The bridge is run by the test user: its directory must be open to it.
    bridgeDir = await mkdtemp(join(tmpdir(), 'rjob-fan-bridge-'));
    await chmod(bridgeDir, 0o755);
    await writeFile(join(bridgeDir, 'bridge.cjs'), BRIDGE, { mode: 0o644 });
    // $HOME/.ssh/config as a user would write it: an alias per host, one key, a strict known_hosts.
    home = await mkdtemp(join(tmpdir(), 'rjob-fan-home-'));
    await mkdir(join(home, '.ssh'), { mode: 0o700 });
    const knownHosts = join(home, '.ssh', 'known_hosts');
    await writeFile(knownHosts, hosts.map((h) => `${h.knownHostsLine}\n`).join(''));
    await writeFile(
      join(home, '.ssh', 'config'),
      hosts.map((h, i) => `Host ${ALIASES[i]}\n  HostName ${h.host}\n  Port ${h.port}\n`).join('') +
        `Host *\n  User ${user}\n  IdentityFile ${hosts[0]!.clientKeyPath}\n  UserKnownHostsFile ${knownHosts}\n` +
        '  StrictHostKeyChecking yes\n  GlobalKnownHostsFile /dev/null\n' +
        // Eighteen logins at once on a loaded machine may take longer than the 20 s default.
        '  ConnectTimeout 120\n',
    );
  });

  afterAll(async () => {
    if (remoteState) await stopDaemonIn(remoteState);
    await hosts?.stopAll();
    for (const dir of [remoteState, bridgeDir, home])
      if (dir) await rm(dir, { recursive: true, force: true });
  });

  const env = (): NodeJS.ProcessEnv => ({
    HOME: home,
    SSH_AUTH_SOCK: '',
    RJOB_REMOTE_AGENT: `exec node ${join(bridgeDir, 'bridge.cjs')} ${join(remoteState, 'agent.sock')}`,
  });

  it('shows progress on a terminal, prefixes every line, and ends with the per-class summary', async () => {
    await using s = await sandbox(env());
    // One agent for all 20 "hosts" (one machine, one user), started once through the real
    // `rjob agent --stdio` entry; the fan-out's hosts then reach it through the bridge.
    const warm = await s.bin(['invoke', '-c', 'web01', '--', 'true'], {
      env: {
        // TMPDIR inside the state dir: whatever the remote agent leaves there goes with it.
        RJOB_REMOTE_AGENT: `TMPDIR=${remoteState} exec node --conditions=@rjob/source --import ${TSX} ${ENTRY} agent --stdio --state-dir ${remoteState}`,
      },
    });
    expect(warm).toEqual({ code: 0, stdout: '', stderr: '' });
    await writeFile(join(s.dir, 'hosts.txt'), `# the web tier\n${ALIASES.join('\n')}\n`);
    const argv = ['invoke', '-c', '@hosts.txt', '--throttle', '32', '--', COMMAND];

    const tty = await s.pty(argv, '');
    expect(tty.code, tty.stdout).toBe(ExitCode.Unreachable);
    // The progress line is redrawn as hosts finish: the up hosts when their work ends, the two down
    // hosts when they are given up on.
    const raw = tty.stdout.replace(ESCAPES, '');
    expect(raw).toContain('0/20 hosts done');
    expect(raw).toContain('20/20 hosts done');
    expect(raw).not.toContain('21/20 hosts done');
    // What stays on the screen: the progress is gone, no host line was cut by it, summary last.
    const screen = screenLines(tty.stdout.replace(/\r\n/g, '\n'));
    expect(screen.at(-1)).toBe(SUMMARY);
    const hostLines = screen.filter((line) => /^\[web\d\d\] /.test(line) && !unreachableLine.test(line));
    expect(hostLines.slice().sort()).toEqual(expectedOutput());
    expectHostOrder(hostLines);
    expect(screen.filter((line) => unreachableLine.test(line))).toHaveLength(2);
    expect(screen).toHaveLength(hostLines.length + 3);

    // No terminal: the same lines and summary, no progress and no cursor control on stderr.
    const piped = await s.bin(argv);
    expect(piped.code, piped.stderr).toBe(ExitCode.Unreachable);
    const stdout = piped.stdout.split('\n').filter(Boolean);
    expect(stdout.slice().sort()).toEqual(expectedOutput());
    expectHostOrder(stdout);
    expect(piped.stderr).not.toContain('hosts done');
    expect(piped.stderr).not.toMatch(/[\r\u001b]/);
    const stderr = piped.stderr.split('\n').filter(Boolean);
    expect(stderr.at(-1)).toBe(SUMMARY);
    expect(stderr.slice(0, -1).map((line) => line.match(unreachableLine)?.[1])).toEqual(
      expect.arrayContaining(['web07', 'web15']),
    );
    expect(stderr).toHaveLength(3);
  });
});
