import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, chown, mkdtemp, readFile, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSession, RjobError } from '@rjob/core';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadAgentBundle } from './agent-bundle.js';
import { nodeVersionAtLeast, parseProbe, shellQuote, withAgentDeploy } from './deploy.js';
import { SshErrorCode } from './errors.js';
import { type SshTransportOptions, sshTransport } from './ssh-transport.js';
import { type SshdFixture, startSshd, sshdUnavailableReason } from './testing/sshd-fixture.js';

const skip = sshdUnavailableReason();

async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 5));
}

describe('deployment helpers', () => {
  it('parses the probe line, with a path that holds spaces', () => {
    expect(parseProbe('rjob-probe no-node\n')).toEqual({ node: false });
    expect(parseProbe('motd noise\nrjob-probe 22.1.0 - /home/a b/.cache/rjob/agent.mjs\n')).toEqual({
      node: true,
      version: '22.1.0',
      existingSha256: undefined,
      file: '/home/a b/.cache/rjob/agent.mjs',
    });
    expect(parseProbe('nothing here')).toBeUndefined();
  });

  it('compares node versions numerically', () => {
    expect(nodeVersionAtLeast('20.19.0')).toBe(true);
    expect(nodeVersionAtLeast('20.9.0')).toBe(false);
    expect(nodeVersionAtLeast('22.0.0')).toBe(true);
    expect(nodeVersionAtLeast('18.20.4')).toBe(false);
  });

  it('quotes for a POSIX shell', () => {
    expect(execFileSync('sh', ['-c', `printf %s ${shellQuote('it\'s a "test" $HOME')}`]).toString()).toBe(
      `it's a "test" $HOME`,
    );
  });

  it('replays unanswered frames to the deployed link, holds frames for a late handler, and reports a drain', async () => {
    const fake = () => {
      const sent: Uint8Array[] = [];
      let onMessage: ((frame: Uint8Array) => void) | undefined;
      let onClose: ((reason: RjobError) => void) | undefined;
      return {
        sent,
        deliver: (frame: Uint8Array) => onMessage?.(frame),
        die: (reason: RjobError) => onClose?.(reason),
        link: {
          // The dead agent's channel says "congested", as a closed exec channel may.
          send(frame: Uint8Array) {
            sent.push(frame);
            return false;
          },
          onMessage(handler: (frame: Uint8Array) => void) {
            onMessage = handler;
            return () => {};
          },
          close() {},
          onClose(handler: (reason: RjobError) => void) {
            onClose = handler;
            return () => {};
          },
        },
      };
    };
    const first = fake();
    const second = fake();
    let drained = 0;
    const link = withAgentDeploy(first.link, async () => second.link);
    link.onDrain?.(() => drained++);
    link.send(Uint8Array.of(1));
    first.die(new RjobError(SshErrorCode.NoAgent, 'not found'));
    link.send(Uint8Array.of(2));
    await until(() => second.sent.length === 2);
    expect(second.sent.map((f) => f[0])).toEqual([1, 2]);
    expect(drained).toBe(1);
    // A frame that arrives between handlers (the handshake handing over) waits for the next one.
    second.deliver(Uint8Array.of(9));
    const got: number[] = [];
    link.onMessage((frame) => got.push(frame[0]!));
    // Handed over as the other transports' channels do (core's channel controller): next microtask.
    await until(() => got.length > 0);
    expect(got).toEqual([9]);
    // Once the agent answered, a later NoAgent is an ordinary close, not another deployment.
    const reason = new Promise<RjobError>((resolve) => link.onClose(resolve));
    second.die(new RjobError(SshErrorCode.NoAgent, 'gone'));
    expect((await reason).code).toBe(SshErrorCode.NoAgent);
  });

  it('a link that fails for another reason is not replaced', async () => {
    let closeHandler: ((reason: RjobError) => void) | undefined;
    const first = {
      send: () => true,
      onMessage: () => () => {},
      close: () => {},
      onClose: (handler: (reason: RjobError) => void) => {
        closeHandler = handler;
        return () => {};
      },
    };
    let fallbacks = 0;
    const link = withAgentDeploy(first, async () => {
      fallbacks++;
      return first;
    });
    const reason = new Promise<RjobError>((resolve) => link.onClose(resolve));
    closeHandler?.(new RjobError('ERR_LINK_CLOSED', 'gone'));
    expect((await reason).code).toBe('ERR_LINK_CLOSED');
    expect(fallbacks).toBe(0);
  });
});

/** Daemon pid file in an agent state dir (packages/agent/src/cli-main.ts DAEMON_PID_FILE). */
const DAEMON_PID_FILE = 'agent.pid';
const USER = 'rjobtest';

const fixtures: SshdFixture[] = [];
const tempDirs: string[] = [];
const stateDirs: string[] = [];
/** Files and directories deploy put in the test user's home, removed after each test. */
const homeLeftovers: { file: string; dirs: string[] }[] = [];

function homeOf(user: string): string {
  return execFileSync('getent', ['passwd', user]).toString().trim().split(':')[5]!;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function stopDaemon(stateDir: string): Promise<void> {
  const pid = Number((await readFile(join(stateDir, DAEMON_PID_FILE), 'utf8').catch(() => '')).trim());
  if (pid && alive(pid)) {
    process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 250 && alive(pid); i++) await new Promise((resolve) => setTimeout(resolve, 20));
    // The daemon leads its own process group: take its jobs with it if it would not go.
    if (alive(pid)) process.kill(-pid, 'SIGKILL');
  }
  await rm(stateDir, { recursive: true, force: true });
}

afterEach(async () => {
  for (const fixture of fixtures.splice(0)) await fixture.stop();
  for (const dir of stateDirs.splice(0)) await stopDaemon(dir);
  for (const dir of tempDirs.splice(0)) await rm(dir, { recursive: true, force: true });
  for (const { file, dirs } of homeLeftovers.splice(0)) {
    await rm(file, { force: true });
    // Only directories deploy created, innermost first, and only if nothing else lives there.
    for (const dir of dirs) await rmdir(dir).catch(() => {});
  }
});

/** An ssh_config and known_hosts for one fixture, read by the transport instead of the real ones. */
async function clientOptions(alias: string, fixture: SshdFixture): Promise<SshTransportOptions> {
  const dir = await mkdtemp(join(tmpdir(), 'rjob-deploy-client-'));
  tempDirs.push(dir);
  const knownHosts = join(dir, 'known_hosts');
  const configFile = join(dir, 'config');
  await writeFile(knownHosts, `${fixture.knownHostsLine}\n`);
  await writeFile(
    configFile,
    `Host ${alias}\n  HostName ${fixture.host}\n  Port ${fixture.port}\n  User ${fixture.user}\n` +
      `  IdentityFile ${fixture.clientKeyPath}\n  StrictHostKeyChecking yes\n` +
      `  UserKnownHostsFile ${knownHosts}\n  GlobalKnownHostsFile /dev/null\n`,
  );
  return { sshConfig: { configFile, systemConfigFile: null }, agent: false };
}

/** An agent state dir owned by `user`, so the deployed daemon is sandboxed and easy to stop. */
async function stateDirFor(user: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'rjob-deploy-state-'));
  stateDirs.push(dir);
  const uid = Number(execFileSync('id', ['-u', user]).toString().trim());
  const gid = Number(execFileSync('id', ['-g', user]).toString().trim());
  await chown(dir, uid, gid);
  await chmod(dir, 0o700);
  return dir;
}

describe.skipIf(skip !== undefined)('agent deployment against OpenSSH sshd', () => {
  beforeAll(async () => {
    // Bundling from source happens once per process; do it before any handshake clock runs.
    await loadAgentBundle();
  });

  it('a host with node but without rjob gets the agent deployed (verified) and used; later connects reuse it', async () => {
    const bundle = await loadAgentBundle();
    const box = await startSshd({ user: USER });
    fixtures.push(box);
    const home = homeOf(USER);
    const cacheDir = join(home, '.cache');
    const rjobDir = join(cacheDir, 'rjob');
    const file = join(rjobDir, bundle.fileName);
    homeLeftovers.push({
      file,
      dirs: [rjobDir, ...(existsSync(cacheDir) ? [] : [cacheDir])],
    });
    // A copy left by an earlier run would hide the upload this test is about.
    await rm(file, { force: true });
    // A bundle an older rjob deployed: cleaned once this one is in place.
    const uid = Number(execFileSync('id', ['-u', USER]).toString().trim());
    const gid = Number(execFileSync('id', ['-g', USER]).toString().trim());
    execFileSync('install', ['-d', '-m', '700', '-o', String(uid), '-g', String(gid), cacheDir, rjobDir]);
    const older = join(rjobDir, 'agent-0.0.0-0123456789abcdef.mjs');
    await writeFile(older, 'process.exit(3);\n');
    await chown(older, uid, gid);
    homeLeftovers.push({ file: older, dirs: [] });
    const deploys: string[] = [];
    const stateDir = await stateDirFor(USER);
    const options: SshTransportOptions = {
      ...(await clientOptions('box1', box)),
      onDeploy: ({ host, file: deployedTo }) => deploys.push(`${host.alias} ${deployedTo}`),
      // Nothing by this name exists there: the host "has node but not rjob".
      agentCommand: 'rjob-agent-not-installed --stdio',
      // TMPDIR in the state dir: the job watchdog's registry goes away with it.
      deployedAgentCommand: (path) =>
        `TMPDIR=${stateDir} exec node ${shellQuote(path)} --stdio --state-dir ${stateDir}`,
    };
    const transport = sshTransport(options);
    const session = await openSession(transport, 'box1', { handshakeTimeoutMs: 60_000 });
    try {
      const echoed = [];
      for await (const record of session.invoke({ definition: { command: 'echo hello from "$(id -un)"' } }))
        echoed.push(record.data);
      expect(echoed).toEqual(['hello from rjobtest']);

      // A job kept in the session, and the two runners the bundle must also host: a worker
      // thread and a node child, both started from the single deployed file.
      const job = await session.jobs.start({ definition: { command: 'echo kept' } }, { name: 'kept' });
      await session.jobs.wait(job.id);
      expect((await session.jobs.receive('kept', { keep: true })).map((r) => r.data)).toEqual(['kept']);
      const thread = [];
      for await (const record of session.invoke({ type: 'thread', definition: { eval: 'yield 6 * 7' } }))
        thread.push(record.data);
      expect(thread).toEqual([42]);
      const child = [];
      for await (const record of session.invoke({
        type: 'process',
        definition: { eval: 'yield typeof process.send' },
      }))
        child.push(record.data);
      expect(child).toEqual(['function']);
    } finally {
      await session.close();
    }

    // Said once, for the upload; the older bundle is gone.
    expect(deploys).toEqual([`box1 ${file}`]);
    expect(existsSync(older)).toBe(false);
    // The file is in the user's cache, owned by them, private, and byte for byte the bundle.
    const deployed = await readFile(file);
    expect(createHash('sha256').update(deployed).digest('hex')).toBe(bundle.sha256);
    const fileInfo = await stat(file);
    const dirInfo = await stat(rjobDir);
    expect(fileInfo.uid).toBe(Number(execFileSync('id', ['-u', USER]).toString().trim()));
    expect(dirInfo.mode & 0o777).toBe(0o700);
    // The bridge started the daemon from the deployed file too.
    const daemonPid = Number((await readFile(join(stateDir, DAEMON_PID_FILE), 'utf8')).trim());
    expect(readFileSync(`/proc/${daemonPid}/cmdline`, 'utf8').split('\0')).toContain(file);

    // A new transport (nothing remembered) finds the verified file and does not upload again: an
    // upload goes through a temp file and a rename, which would give the path a new inode.
    const again = sshTransport(options);
    const second = await openSession(again, 'box1', { handshakeTimeoutMs: 60_000 });
    try {
      const out = [];
      for await (const record of second.invoke({ definition: { command: 'echo again' } }))
        out.push(record.data);
      expect(out).toEqual(['again']);
    } finally {
      await second.close();
    }
    const after = await stat(file);
    expect([after.ino, after.mtimeMs]).toEqual([fileInfo.ino, fileInfo.mtimeMs]);
    // Nothing uploaded, nothing said.
    expect(deploys).toHaveLength(1);
  });

  it('a corrupted copy in the cache is replaced, never run', async () => {
    const bundle = await loadAgentBundle();
    const box = await startSshd({ user: USER });
    fixtures.push(box);
    const home = homeOf(USER);
    const cacheDir = join(home, '.cache');
    const rjobDir = join(cacheDir, 'rjob');
    const file = join(rjobDir, bundle.fileName);
    homeLeftovers.push({ file, dirs: [rjobDir, ...(existsSync(cacheDir) ? [] : [cacheDir])] });
    const uid = Number(execFileSync('id', ['-u', USER]).toString().trim());
    const gid = Number(execFileSync('id', ['-g', USER]).toString().trim());
    // Planted as the user would have it: an agent file whose content is not the bundle's.
    execFileSync('install', ['-d', '-m', '700', '-o', String(uid), '-g', String(gid), cacheDir, rjobDir]);
    await writeFile(file, 'process.exit(99);\n');
    await chown(file, uid, gid);
    const stateDir = await stateDirFor(USER);
    const transport = sshTransport({
      ...(await clientOptions('box1', box)),
      agentCommand: 'rjob-agent-not-installed --stdio',
      deployedAgentCommand: (path) =>
        `TMPDIR=${stateDir} exec node ${shellQuote(path)} --stdio --state-dir ${stateDir}`,
    });
    const session = await openSession(transport, 'box1', { handshakeTimeoutMs: 60_000 });
    try {
      const out = [];
      for await (const record of session.invoke({ definition: { command: 'echo ok' } }))
        out.push(record.data);
      expect(out).toEqual(['ok']);
    } finally {
      await session.close();
    }
    expect(
      createHash('sha256')
        .update(await readFile(file))
        .digest('hex'),
    ).toBe(bundle.sha256);
  });

  it('with deploy: never, a host without rjob is refused with ERR_SSH_NO_AGENT and nothing is uploaded', async () => {
    const bundle = await loadAgentBundle();
    const box = await startSshd({ user: USER });
    fixtures.push(box);
    const file = join(homeOf(USER), '.cache', 'rjob', bundle.fileName);
    const transport = sshTransport({
      ...(await clientOptions('box1', box)),
      agentCommand: 'rjob-agent-not-installed --stdio',
      deploy: 'never',
    });
    const link = await transport.connect('box1');
    const reason = await new Promise<RjobError>((resolve) => link.onClose(resolve));
    expect(reason.code).toBe(SshErrorCode.NoAgent);
    expect(existsSync(file)).toBe(false);
  });
});
