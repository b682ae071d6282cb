/**
 * The CLI asking on a terminal: driven through a pseudo-terminal (util-linux `script`) against
 * OpenSSH sshd, answering ssh's unknown-host question and a password prompt only once each
 * appears. Off a terminal the same command asks nothing and is refused with a code. The password
 * belongs to a user of its own (`rjobclipw`), locked again when the fixture stops.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type SshdFixture, sshdUnavailableReason, startSshd } from '@rjob/transport-ssh/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from './io.js';
import { stopDaemonIn } from './testing/daemon.js';
import { BIN, type Sandbox, sandbox } from './testing/sandbox.js';

const skip = sshdUnavailableReason();
const TSX = fileURLToPath(import.meta.resolve('tsx'));
const ENTRY = fileURLToPath(new URL('./cli-entry.ts', import.meta.url));
const USER = 'rjobclipw';

interface Step {
  /** Text to wait for on the terminal (after the previous step's). */
  expect: string;
  /** Typed once it appears. */
  type: string;
}

interface PtyResult {
  code: number;
  /** Everything the terminal showed, without carriage returns. */
  screen: string;
}

const quote = (word: string): string => `'${word.replace(/'/g, `'\\''`)}'`;

/**
 * Runs `rjob ARGV > stdoutFile` on a pseudo-terminal (stdin and stderr are the terminal, stdout a
 * file) and types each step's answer only once its text has appeared, as a person would. `after`
 * is a shell command run on the same terminal once rjob has exited.
 */
function onTerminal(
  s: Sandbox,
  argv: string[],
  stdoutFile: string,
  steps: Step[],
  after?: string,
): Promise<PtyResult> {
  return new Promise((resolve, reject) => {
    const rjob = `${[process.execPath, BIN, ...argv].map(quote).join(' ')} > ${quote(stdoutFile)}`;
    // `script` reports the exit status of the whole command: keep rjob's.
    const command = after === undefined ? rjob : `${rjob}; code=$?; ${after}; exit $code`;
    const child = spawn('script', ['-qfec', command, '/dev/null'], { cwd: s.dir, env: s.env, stdio: 'pipe' });
    let screen = '';
    let from = 0;
    const pending = [...steps];
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      screen += chunk.replace(/\r/g, '');
      const step = pending[0];
      if (!step) return;
      const at = screen.indexOf(step.expect, from);
      if (at < 0) return;
      from = at + step.expect.length;
      pending.shift();
      child.stdin.write(step.type);
    });
    child.stderr.resume();
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, screen }));
  });
}

describe.skipIf(skip !== undefined)('rjob asks on a terminal (sshd)', { timeout: 180_000 }, () => {
  let fixture: SshdFixture | undefined;
  let home = '';
  let remoteState = '';
  const password = `cli-${randomBytes(9).toString('base64url')}`;

  beforeAll(async () => {
    fixture = await startSshd({ user: USER, password });
    remoteState = await mkdtemp(join(tmpdir(), 'rjob-cli-pw-remote-'));
    const uid = Number(execFileSync('id', ['-u', USER]).toString().trim());
    const gid = Number(execFileSync('id', ['-g', USER]).toString().trim());
    await chown(remoteState, uid, gid);
    await chmod(remoteState, 0o700);
    home = await mkdtemp(join(tmpdir(), 'rjob-cli-pw-home-'));
    await mkdir(join(home, '.ssh'), { mode: 0o700 });
    // No key and no known host: the password and the host key must come from the terminal.
    await writeFile(
      join(home, '.ssh', 'config'),
      `Host pwhost\n  HostName ${fixture.host}\n  Port ${fixture.port}\n  User ${USER}\n` +
        'Host *\n  StrictHostKeyChecking ask\n  GlobalKnownHostsFile /dev/null\n',
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
  const knownHosts = (): string => join(home, '.ssh', 'known_hosts');

  it('off a terminal nothing is asked: the unknown host is refused, with its code and exit 4', async () => {
    await using s = await sandbox(env());
    const out = await s.rjob('invoke', '-c', 'pwhost', '--', 'id -un');
    expect(out.code).toBe(ExitCode.Unreachable);
    expect(out.stderr).toMatch(/^rjob: pwhost: .+ \(ERR_SSH_HOST_KEY_UNKNOWN\)\n$/);
    expect(fixture!.logs()).not.toMatch(/Failed password|Accepted password/);
  });

  it('on a terminal: accepts the host key on "yes", records it, then logs in with the typed password', async () => {
    await using s = await sandbox(env());
    const stdoutFile = join(s.dir, 'stdout.txt');
    const { code, screen } = await onTerminal(
      s,
      ['invoke', '-c', 'pwhost', '--no-prefix', '--', 'id -un'],
      stdoutFile,
      [
        { expect: 'Are you sure you want to continue connecting (yes/no/[fingerprint])? ', type: 'yes\r' },
        { expect: `${USER}@${fixture!.host}'s password: `, type: `${password}\r` },
      ],
    );
    expect(code, screen).toBe(0);
    expect(screen).toContain(
      `The authenticity of host '[${fixture!.host}]:${fixture!.port}' can't be established.`,
    );
    // The answer to the question is echoed, the password is not.
    expect(screen).toContain('(yes/no/[fingerprint])? yes\n');
    expect(screen).not.toContain(password);
    // The command's output went to stdout, the questions did not.
    expect(await readFile(stdoutFile, 'utf8')).toBe(`${USER}\n`);
    // Recorded as ssh records it: the next connection knows the host.
    expect(await readFile(knownHosts(), 'utf8')).toBe(`${fixture!.knownHostsLine}\n`);
    expect(fixture!.logs()).toMatch(new RegExp(`Accepted password for ${USER}`));
  });

  it('three wrong passwords on a terminal: one coded line, exit 4; off a terminal no password is tried', async () => {
    await using s = await sandbox(env());
    const stdoutFile = join(s.dir, 'stdout.txt');
    const prompt = `${USER}@${fixture!.host}'s password: `;
    const { code, screen } = await onTerminal(s, ['invoke', '-c', 'pwhost', '--', 'id -un'], stdoutFile, [
      { expect: prompt, type: 'wrong-1\r' },
      { expect: `Permission denied, please try again.\n${prompt}`, type: 'wrong-2\r' },
      { expect: `Permission denied, please try again.\n${prompt}`, type: 'wrong-3\r' },
    ]);
    expect(code, screen).toBe(ExitCode.Unreachable);
    expect(screen).toMatch(/rjob: pwhost: .*password refused 3 times.* \(ERR_SSH_AUTH_FAILED\)\n/);
    expect(screen).not.toMatch(/wrong-\d/);
    expect(await readFile(stdoutFile, 'utf8')).toBe('');

    // The host is known now; off a terminal the password is simply not tried.
    const failedBefore = (fixture!.logs().match(/Failed password/g) ?? []).length;
    const out = await s.rjob('invoke', '-c', 'pwhost', '--', 'id -un');
    expect(out.code).toBe(ExitCode.Unreachable);
    expect(out.stderr).toMatch(
      /^rjob: pwhost: .*password not tried: no terminal to ask on.* \(ERR_SSH_AUTH_FAILED\)\n$/,
    );
    expect((fixture!.logs().match(/Failed password/g) ?? []).length).toBe(failedBefore);
  });
});

describe.skipIf(skip !== undefined)(
  'a question withdrawn when the server hangs up (sshd)',
  { timeout: 120_000 },
  () => {
    let fixture: SshdFixture | undefined;
    let home = '';

    beforeAll(async () => {
      // keyboard-interactive through PAM asks `Password:` and nobody answers: sshd hangs up after
      // LoginGraceTime with the question still on the screen.
      fixture = await startSshd({
        keyboardInteractive: true,
        address: '127.0.0.8',
        extraConfig: ['LoginGraceTime 2'],
      });
      home = await mkdtemp(join(tmpdir(), 'rjob-cli-grace-home-'));
      await mkdir(join(home, '.ssh'), { mode: 0o700 });
      await writeFile(
        join(home, '.ssh', 'config'),
        `Host gracehost\n  HostName ${fixture.host}\n  Port ${fixture.port}\n  User ${fixture.user}\n` +
          'Host *\n  StrictHostKeyChecking yes\n  GlobalKnownHostsFile /dev/null\n',
      );
      await writeFile(join(home, '.ssh', 'known_hosts'), `${fixture.knownHostsLine}\n`);
    });

    afterAll(async () => {
      await fixture?.stop();
      await rm(home, { recursive: true, force: true });
    });

    it('the question line is ended, echo is back on, and the coded error has a line of its own', async () => {
      await using s = await sandbox({ HOME: home, SSH_AUTH_SOCK: '' });
      const stdoutFile = join(s.dir, 'stdout.txt');
      const sttyFile = join(s.dir, 'stty.txt');
      const prompt = `(${fixture!.user}@${fixture!.host}) Password: `;
      const { code, screen } = await onTerminal(
        s,
        ['invoke', '-c', 'gracehost', '--', 'id -un'],
        stdoutFile,
        // Something typed but never sent: the answer is not complete when the server hangs up.
        [{ expect: prompt, type: 'half-typ' }],
        `stty -a > ${quote(sttyFile)}`,
      );
      expect(code, screen).toBe(ExitCode.Unreachable);
      // Asked once, withdrawn: the prompt's line ends right there and the error follows on its own.
      expect(screen.split(prompt)).toHaveLength(2);
      expect(screen).toMatch(
        new RegExp(
          `${prompt.replace(/[.()]/g, '\\$&')}\nrjob: gracehost: .*while the keyboard-interactive question was open.* \\(ERR_SSH_CONNECT_FAILED\\)\n`,
        ),
      );
      expect(screen).not.toContain('half-typ');
      // The terminal has its echo and line editing back.
      const stty = await readFile(sttyFile, 'utf8');
      expect(stty).toMatch(/(^|\s)echo(\s|$)/);
      expect(stty).toMatch(/(^|\s)icanon(\s|$)/);
      expect(await readFile(stdoutFile, 'utf8')).toBe('');
    });
  },
);
