import { execFileSync } from 'node:child_process';
import { chmod, chown, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { invokeMany, JobManager, openSession, RjobError } from '@rjob/core';
import { acceptOneLink, linkPair, runTransportConformance } from '@rjob/core/testing';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { SshErrorCode } from './errors.js';
import { type SshTransportOptions, sshTransport } from './ssh-transport.js';
import { type SshdFixture, startSshd, sshdUnavailableReason } from './testing/sshd-fixture.js';

const skip = sshdUnavailableReason();

const TSX_LOADER = createRequire(import.meta.url).resolve('tsx');
const AGENT_ENTRY = fileURLToPath(new URL('../../agent/src/cli-entry.ts', import.meta.url));
/** Daemon pid file in an agent state dir (packages/agent/src/cli-main.ts DAEMON_PID_FILE). */
const DAEMON_PID_FILE = 'agent.pid';

/** Temp dirs (root-owned or the test user's) and agent state dirs to clean up. */
const tempDirs: string[] = [];
const stateDirs: string[] = [];
const fixtures: SshdFixture[] = [];

function testUserIds(): { uid: number; gid: number } {
  const uid = Number(execFileSync('id', ['-u', 'rjobtest']).toString().trim());
  const gid = Number(execFileSync('id', ['-g', 'rjobtest']).toString().trim());
  return { uid, gid };
}

async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

/** A state dir the test user owns (the sshd fixture creates the user on first start). */
async function agentStateDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'rjob-ssh-agent-'));
  stateDirs.push(dir);
  const { uid, gid } = testUserIds();
  await chown(dir, uid, gid);
  await chmod(dir, 0o700);
  return dir;
}

/** The agent run from source by the test user, as `rjob agent --stdio` would run. */
function agentCommand(stateDir: string): string {
  // TMPDIR inside the state dir: the teardown SIGKILLs the test user's processes, so anything the
  // agent would clean up itself (its job watchdog's registry) must go with the state dir instead.
  return `TMPDIR=${stateDir} exec node --conditions=source --import ${TSX_LOADER} ${AGENT_ENTRY} --stdio --state-dir ${stateDir}`;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until(condition: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, 20));
}

/** Stops the daemon the `--stdio` bridge started in `stateDir`, then removes the dir. */
async function stopAgent(stateDir: string): Promise<void> {
  const pid = Number((await readFile(join(stateDir, DAEMON_PID_FILE), 'utf8').catch(() => '')).trim());
  if (pid && alive(pid)) {
    process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 250 && alive(pid); i++) await new Promise((resolve) => setTimeout(resolve, 20));
    if (alive(pid)) process.kill(-pid, 'SIGKILL');
  }
  await rm(stateDir, { recursive: true, force: true });
}

async function cleanUp(): Promise<void> {
  for (const fixture of fixtures.splice(0)) await fixture.stop();
  for (const dir of stateDirs.splice(0)) await stopAgent(dir);
  for (const dir of tempDirs.splice(0)) await rm(dir, { recursive: true, force: true });
}

async function sshd(address = '127.0.0.1', clientKeyFile?: string): Promise<SshdFixture> {
  const fixture = await startSshd({ address, ...(clientKeyFile ? { clientKeyFile } : {}) });
  fixtures.push(fixture);
  return fixture;
}

interface HostEntry {
  alias: string;
  host: string;
  port: number;
  identityFile: string;
  knownHostsLine?: string;
}

/**
 * Writes an ssh_config (one `Host` block per entry) and a known_hosts file, and returns transport
 * options that read only them: the transport resolves aliases as ssh would.
 */
async function configFor(entries: HostEntry[]): Promise<SshTransportOptions> {
  const dir = await tempDir('rjob-ssh-client-');
  const knownHosts = join(dir, 'known_hosts');
  const configFile = join(dir, 'config');
  await writeFile(
    knownHosts,
    entries
      .filter((e) => e.knownHostsLine)
      .map((e) => `${e.knownHostsLine}\n`)
      .join(''),
  );
  await writeFile(
    configFile,
    entries
      .map(
        (e) =>
          `Host ${e.alias}\n  HostName ${e.host}\n  Port ${e.port}\n  User rjobtest\n  IdentityFile ${e.identityFile}\n`,
      )
      .join('') +
      `Host *\n  StrictHostKeyChecking yes\n  UserKnownHostsFile ${knownHosts}\n  GlobalKnownHostsFile /dev/null\n`,
  );
  return { sshConfig: { configFile, systemConfigFile: null }, agent: false };
}

function entryOf(alias: string, fixture: SshdFixture): HostEntry {
  return {
    alias,
    host: fixture.host,
    port: fixture.port,
    identityFile: fixture.clientKeyPath,
    knownHostsLine: fixture.knownHostsLine,
  };
}

/** A port on `address` that nothing listens on. */
async function unusedPort(address: string): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, address, resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function codes(error: unknown): string[] {
  const out: string[] = [];
  for (let e = error; RjobError.is(e) || e instanceof Error; e = (e as Error).cause) {
    if (RjobError.is(e)) out.push(e.code);
  }
  return out;
}

if (skip === undefined) {
  // The conformance suite, with the remote end a tiny bridge from the exec channel's stdio to a
  // Unix socket this test listens on: every frame crosses sshd and the remote command's pipes.
  const BRIDGE = `
const net = require('node:net');
const socket = net.connect(process.argv[2]);
process.stdin.pipe(socket);
socket.pipe(process.stdout);
socket.on('close', () => process.exit(0));
process.stdin.on('end', () => socket.end());
`;
  let shared: Promise<{ fixture: SshdFixture; options: SshTransportOptions; dir: string }> | undefined;
  const setUp = () => {
    shared ??= (async () => {
      const fixture = await startSshd();
      const options = await configFor([entryOf('conf', fixture)]);
      const dir = await mkdtemp(join(tmpdir(), 'rjob-ssh-bridge-'));
      await chmod(dir, 0o755);
      await writeFile(join(dir, 'bridge.cjs'), BRIDGE, { mode: 0o644 });
      return { fixture, options, dir };
    })();
    return shared;
  };
  afterAll(async () => {
    if (!shared) return;
    const { fixture, dir } = await shared;
    await fixture.stop();
    await rm(dir, { recursive: true, force: true });
  });
  let pairs = 0;
  runTransportConformance(
    async ({ maxFrameBytes }) => {
      const { options, dir } = await setUp();
      const path = join(dir, `bridge-${pairs++}.sock`);
      // The bridge runs as the test user, so the socket must be open to it.
      const listener = await acceptOneLink(path, { maxFrameBytes, mode: 0o777 });
      const transport = sshTransport({
        ...options,
        agentCommand: `exec node ${join(dir, 'bridge.cjs')} ${path}`,
      });
      const client = await transport.connect('conf', { maxFrameBytes });
      return linkPair(client, await listener.link, () => listener.close());
    },
    { name: 'ssh transport conformance' },
  );
}

describe.skipIf(skip !== undefined)('sshTransport against OpenSSH sshd', () => {
  afterEach(cleanUp);

  it('S4 over SSH: a job started in a session keeps its results on the agent (receive --keep twice)', async () => {
    const box = await sshd();
    const stateDir = await agentStateDir();
    const transport = sshTransport({
      ...(await configFor([entryOf('box1', box)])),
      agentCommand: agentCommand(stateDir),
    });
    const session = await openSession(transport, 'box1', { name: 's1' });
    try {
      expect(session.computerName).toBe('box1');
      const job = await session.jobs.start(
        { definition: { command: 'for f in a b c; do echo "$f.conf"; done; id -un' } },
        { name: 'audit' },
      );
      await session.jobs.wait(job.id);
      const listed = await session.jobs.get();
      expect(listed).toMatchObject([{ name: 'audit', location: 'localhost' }]);
      const first = await session.jobs.receive('audit', { keep: true });
      expect(first.map((r) => r.data)).toEqual(['a.conf', 'b.conf', 'c.conf', 'rjobtest']);
      expect(first.every((r) => r.computerName === 'box1')).toBe(true);
      const second = await session.jobs.receive('audit', { keep: true });
      expect(second).toEqual(first);
    } finally {
      await session.close();
    }
  });

  it('S3 over SSH: invokeMany as a job over two sshd hosts and one that is down', async () => {
    const one = await sshd('127.0.0.1');
    const two = await sshd('127.0.0.2', one.clientKeyPath);
    const downPort = await unusedPort('127.0.0.3');
    const stateDirs = { box1: await agentStateDir(), box2: await agentStateDir() };
    const options = await configFor([
      entryOf('box1', one),
      entryOf('box2', two),
      { alias: 'box3', host: '127.0.0.3', port: downPort, identityFile: one.clientKeyPath },
    ]);
    const transport = sshTransport({
      ...options,
      // One agent per "host": the three aliases are the same machine and user.
      agentCommand: (host) => agentCommand(host.alias === 'box1' ? stateDirs.box1 : stateDirs.box2),
    });
    const manager = new JobManager();
    const parent = invokeMany(
      manager,
      ['box1', 'box2', 'box3'],
      { definition: { command: 'echo one; echo two' } },
      { asJob: true, name: 'sys', transport },
    );
    expect(parent.children.map((child) => child.location)).toEqual(['box1', 'box2', 'box3']);
    await manager.wait(parent);
    expect(parent.state).toBe('Failed');
    const byName = new Map(parent.children.map((child) => [child.location, child]));
    const down = byName.get('box3')!;
    expect(down.state).toBe('Failed');
    expect(codes(down.reason)).toContain(SshErrorCode.ConnectRefused);
    const records = await manager.receive(parent);
    for (const name of ['box1', 'box2']) {
      expect(byName.get(name)!.state).toBe('Completed');
      expect(records.filter((r) => r.location === name && !r.reason).map((r) => r.data)).toEqual([
        'one',
        'two',
      ]);
    }
    expect(records.filter((r) => r.reason).map((r) => r.location)).toEqual(['box3']);
  });

  it('S5 over SSH: disconnect, reconnect with connect(), every record exactly once', async () => {
    const box = await sshd();
    const stateDir = await agentStateDir();
    const transport = sshTransport({
      ...(await configFor([entryOf('box1', box)])),
      agentCommand: agentCommand(stateDir),
    });
    const marker = join(stateDir, 'done');
    const session = await openSession(transport, 'box1', { name: 'bg' });
    try {
      const job = await session.jobs.start({
        definition: {
          command: `for i in $(seq 60); do echo "Output $i"; sleep 0.002; done; touch "${marker}"`,
        },
      });
      await session.disconnect();
      expect(session.state).toBe('Disconnected');
      // The job runs on while no SSH connection exists: the last link closing ended it.
      await until(() => box.connectionPids().length === 0);
      await until(() =>
        stat(marker).then(
          () => true,
          () => false,
        ),
      );
      await session.connect();
      expect(session.state).toBe('Opened');
      const records = await session.jobs.receive(job.id);
      expect(records.map((r) => r.data)).toEqual(Array.from({ length: 60 }, (_, i) => `Output ${i + 1}`));
      expect(await session.jobs.receive(job.id)).toEqual([]);
    } finally {
      await session.close();
    }
  });

  it('shares one SSH connection per target up to the channel limit; the last link ends it', async () => {
    const box = await sshd();
    const transport = sshTransport({
      ...(await configFor([entryOf('box1', box)])),
      agentCommand: 'exec cat',
      maxChannelsPerConnection: 2,
    });
    const links = await Promise.all([1, 2, 3].map(() => transport.connect('box1')));
    const accepted = box.logs().match(/Accepted publickey/g) ?? [];
    expect(accepted.length).toBe(2);
    // Each link is its own channel: `cat` echoes frames back on the link that sent them.
    const echoes = links.map(
      (link) => new Promise<Uint8Array>((resolve) => link.onMessage((frame) => resolve(frame))),
    );
    for (const [i, link] of links.entries()) link.send(new Uint8Array([i + 1]));
    expect((await Promise.all(echoes)).map((frame) => frame[0])).toEqual([1, 2, 3]);
    for (const link of links) link.close();
    await until(() => box.connectionPids().length === 0);
  });

  it('refuses a changed host key with ERR_SSH_HOST_KEY_CHANGED', async () => {
    const box = await sshd('127.0.0.1');
    const other = await sshd('127.0.0.2');
    // known_hosts claims box1 has the other server's key.
    const wrongLine = `[${box.host}]:${box.port} ${other.hostKeys[0]!.publicKey}`;
    const transport = sshTransport({
      ...(await configFor([{ ...entryOf('box1', box), knownHostsLine: wrongLine }])),
      agentCommand: 'exec cat',
    });
    await expect(transport.connect('box1')).rejects.toMatchObject({ code: SshErrorCode.HostKeyChanged });
    const refused = await openSession(transport, 'box1').then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(codes(refused)).toContain(SshErrorCode.HostKeyChanged);
  });

  it('a host without the agent closes the link with ERR_SSH_NO_AGENT', async () => {
    const box = await sshd();
    const transport = sshTransport({
      ...(await configFor([entryOf('box1', box)])),
      // The default command, on a host where rjob is not installed.
    });
    const link = await transport.connect('box1');
    const reason = await new Promise<RjobError>((resolve) => link.onClose(resolve));
    expect(reason.code).toBe(SshErrorCode.NoAgent);
    expect(reason.message).toMatch(/not installed/);
    expect(reason.details).toMatchObject({ command: 'rjob agent --stdio', exitCode: 127 });
    const refused = await openSession(transport, 'box1').then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(codes(refused)).toContain(SshErrorCode.NoAgent);
    await until(() => box.connectionPids().length === 0);
  });
});
