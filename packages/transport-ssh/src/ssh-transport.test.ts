import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
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
import { defaultRemoteAgentSockets, type SshTransportOptions, sshTransport } from './ssh-transport.js';
import { type SshdFixture, startSshd, startSshds, sshdUnavailableReason } from './testing/sshd-fixture.js';

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
  return `TMPDIR=${stateDir} exec node --conditions=@rjob/source --import ${TSX_LOADER} ${AGENT_ENTRY} --stdio --state-dir ${stateDir}`;
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

/** The command name of a process (`sshd`, `node`, ...), or '' once it is gone. */
function processName(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

function codes(error: unknown): string[] {
  const out: string[] = [];
  for (let e = error; RjobError.is(e) || e instanceof Error; e = (e as Error).cause) {
    if (RjobError.is(e)) out.push(e.code);
  }
  return out;
}

/**
 * A tiny remote command that bridges the exec channel's stdio to a Unix socket: the conformance
 * suite's far end, and a cheap stand-in for `rjob agent --stdio` (which does the same once its
 * daemon runs) where many hosts would otherwise each load the agent from source.
 */
const BRIDGE = `
const net = require('node:net');
const socket = net.connect(process.argv[2]);
process.stdin.pipe(socket);
socket.pipe(process.stdout);
socket.on('close', () => process.exit(0));
process.stdin.on('end', () => socket.end());
`;

/** Writes {@link BRIDGE} where the test user can run it; returns its path. */
async function bridgeScript(): Promise<string> {
  const dir = await tempDir('rjob-ssh-bridge-');
  await chmod(dir, 0o755);
  const path = join(dir, 'bridge.cjs');
  await writeFile(path, BRIDGE, { mode: 0o644 });
  return path;
}

if (skip === undefined) {
  // The conformance suite, with the remote end the bridge to a Unix socket this test listens on:
  // every frame crosses sshd and the remote command's pipes.
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
    { name: 'ssh transport conformance', test: { describe, it } },
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

  it('agentSocket: a running daemon is reached through its socket, with no command run for it', async () => {
    const box = await sshd();
    const stateDir = await agentStateDir();
    const config = await configFor([entryOf('box1', box)]);
    const socketPath = join(stateDir, 'agent.sock');
    // No daemon yet: the socket channel fails and the agent command runs, starting one.
    const first = await openSession(
      sshTransport({ ...config, agentCommand: agentCommand(stateDir), agentSocket: socketPath }),
      'box1',
    );
    try {
      expect((await first.invoke({ definition: { command: 'echo via-exec' } }).result).state).toBe(
        'Completed',
      );
    } finally {
      await first.close();
    }
    // Now the daemon runs. A command that could not start any agent proves the socket is used.
    const direct = sshTransport({ ...config, agentCommand: 'exit 97', agentSocket: () => socketPath });
    const session = await openSession(direct, 'box1');
    try {
      const lines: string[] = [];
      const info = await session.invoke(
        { definition: { command: 'seq 1 3; id -un' } },
        { onRecord: (record) => void lines.push(String(record.data)) },
      ).result;
      expect(info.state).toBe('Completed');
      expect(lines).toEqual(['1', '2', '3', 'rjobtest']);
      // Disconnect and reconnect go through the socket too, and the session's jobs are still there.
      const job = await session.jobs.start({ definition: { command: 'echo kept' } }, { name: 'kept' });
      await session.disconnect();
      await session.connect();
      await session.jobs.wait(job.id);
      expect((await session.jobs.receive('kept')).map((r) => r.data)).toEqual(['kept']);
    } finally {
      await session.close();
    }
    // Without a daemon at the path and without a working command, the command's failure is what
    // the caller sees: a coded refusal, not a hang.
    const nowhere = sshTransport({
      ...config,
      agentCommand: 'exit 127',
      agentSocket: join(stateDir, 'nope.sock'),
      deploy: 'never',
    });
    const refused = await openSession(nowhere, 'box1').catch((error: unknown) => error);
    expect(RjobError.hasCode(refused, SshErrorCode.NoAgent)).toBe(true);
  });

  it('S2 over SSH without the prompt: a session job received into a file on the remote side', async () => {
    const box = await sshd();
    const stateDir = await agentStateDir();
    const transport = sshTransport({
      ...(await configFor([entryOf('box1', box)])),
      agentCommand: agentCommand(stateDir),
    });
    const { uid } = testUserIds();
    const home = execFileSync('getent', ['passwd', 'rjobtest']).toString().trim().split(':')[5]!;
    const name = `events-${randomBytes(6).toString('hex')}.txt`;
    try {
      const session = await openSession(transport, 'box1');
      try {
        await session.jobs.start(
          { definition: { command: 'for i in 1 2 3; do echo "event $i"; done' } },
          { name: 'events' },
        );
        await session.jobs.wait('events');
        const written = await session.jobs.receiveToFile('events', `~/${name}`);
        expect(written).toMatchObject({ path: join(home, name), records: 3, bytes: 24, other: [] });
        expect(await session.jobs.receive('events')).toEqual([]);
      } finally {
        await session.close();
      }
      // Written by the agent's user, in that user's home: the remote side's, not this process's.
      expect((await stat(join(home, name))).uid).toBe(uid);
      // Another session over SSH reads it back, as `rjob invoke -c server01 -- cat ~/events.txt`.
      const reader = await openSession(transport, 'box1');
      try {
        const lines: string[] = [];
        const info = await reader.invoke(
          { definition: { command: `cat ~/${name}` } },
          { onRecord: (record) => void lines.push(String(record.data)) },
        ).result;
        expect(info.state).toBe('Completed');
        expect(lines).toEqual(['event 1', 'event 2', 'event 3']);
      } finally {
        await reader.close();
      }
    } finally {
      await rm(join(home, name), { force: true });
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

  it('the SSH connection dies abruptly mid-stream: Disconnected, reconnects over a new one, every line once', async () => {
    const box = await sshd();
    const stateDir = await agentStateDir();
    const transport = sshTransport({
      ...(await configFor([entryOf('box1', box)])),
      agentCommand: agentCommand(stateDir),
    });
    const session = await openSession(transport, 'box1', { name: 'abrupt', initialBackoffMs: 50 });
    const states: string[] = [];
    session.onStateChange((change) => states.push(change.state));
    const total = 50_000;
    try {
      // Pauses every 1000 lines keep the job printing while the connection is killed.
      const job = await session.jobs.start({
        definition: {
          command: `i=0; while [ $i -lt ${total} ]; do i=$((i+1)); echo "line $i"; [ $((i % 1000)) -eq 0 ] && sleep 0.05; done; true`,
        },
      });
      const lines: string[] = [];
      let killed = false;
      let killedPids = 0;
      let firstAccepted = 0;
      const ended = new Promise<void>((resolve, reject) => {
        session.subscribe(job.id, {
          onRecord: (record) => {
            lines.push(record.data as string);
            if (!killed && lines.length >= 2_000) {
              killed = true;
              firstAccepted = (box.logs().match(/Accepted publickey/g) ?? []).length;
              // SIGKILL the sshd processes serving this connection (not the agent below them):
              // the TCP connection dies with no SSH goodbye, as when a host or network drops.
              const serving = box.connectionPids().filter((pid) => processName(pid).startsWith('sshd'));
              killedPids = serving.length;
              for (const pid of serving) process.kill(pid, 'SIGKILL');
            }
          },
          onEnd: () => resolve(),
          onSessionEnd: reject,
        });
      });
      await ended;
      expect(killed).toBe(true);
      expect(killedPids).toBeGreaterThan(0);
      expect(states.slice(0, 2)).toEqual(['Disconnected', 'Opened']);
      expect(session.state).toBe('Opened');
      // A second SSH login: the resume came over a new connection.
      expect((box.logs().match(/Accepted publickey/g) ?? []).length).toBeGreaterThan(firstAccepted);
      expect(lines.length).toBe(total);
      expect(lines).toEqual(Array.from({ length: total }, (_, i) => `line ${i + 1}`));
      expect(await session.jobs.receive(job.id)).toEqual([]);
    } finally {
      await session.close();
    }
  });

  it('fan-out to 20 sshd hosts with 2 down: 18 results and 2 ERR_SSH_CONNECT_REFUSED, as a job and streamed', async () => {
    const addresses = Array.from({ length: 20 }, (_, i) => `127.0.0.${i + 2}`);
    const hosts = await startSshds(addresses);
    fixtures.push(...hosts);
    const aliases = hosts.map((_, i) => `web${i + 1}`);
    const down = new Set(['web7', 'web15']);
    for (const [i, alias] of aliases.entries()) if (down.has(alias)) await hosts[i]!.stop();
    // One agent for all: the 20 "hosts" are one machine and user. Its daemon is started once
    // through the real `--stdio` entry; every host's exec then runs the plain bridge to it.
    const stateDir = await agentStateDir();
    const options = await configFor(hosts.map((h, i) => entryOf(aliases[i]!, h)));
    const warm = await openSession(
      sshTransport({ ...options, agentCommand: agentCommand(stateDir) }),
      'web1',
    );
    await warm.close();
    const bridge = `exec node ${await bridgeScript()} ${join(stateDir, 'agent.sock')}`;
    // A transport per phase: each has its own connection pool, so each phase logs in afresh.
    const transport = () => sshTransport({ ...options, agentCommand: bridge });
    const work = { definition: { command: 'echo ok' } };
    // Twenty handshakes at once on a shared, loaded machine: allow more than the default 10 s.
    const sessionOptions = { handshakeTimeoutMs: 60_000 };
    /** Logins each sshd accepted so far: proof that a host was really reached through its own sshd. */
    const logins = () => hosts.map((h) => (h.logs().match(/Accepted publickey/g) ?? []).length);
    /** sshd's log arrives through a pipe, maybe after the work is done: wait for one more login. */
    const loggedOnce = async (i: number, since: number[]): Promise<void> => {
      await until(() => logins()[i]! > since[i]!);
      expect(logins()[i]! - since[i]!).toBe(1);
    };
    const upHosts = aliases.flatMap((a, i) => (down.has(a) ? [] : [i]));
    let before = logins();

    const manager = new JobManager();
    const parent = invokeMany(manager, aliases, work, {
      asJob: true,
      name: 'web',
      transport: transport(),
      sessionOptions,
    });
    await manager.wait(parent);
    expect(parent.state).toBe('Failed');
    expect(parent.children.map((child) => child.location)).toEqual(aliases);
    const records = await manager.receive(parent);
    for (const [i, child] of parent.children.entries()) {
      if (down.has(child.location)) {
        expect(child.state).toBe('Failed');
        expect(RjobError.is(child.reason) && child.reason.code).toBe(SshErrorCode.ConnectRefused);
      } else {
        expect(child.state, `${child.location}: ${String(child.reason)}`).toBe('Completed');
        const mine = records.filter((r) => r.location === child.location && !r.reason);
        expect(mine.map((r) => r.data)).toEqual(['ok']);
        await loggedOnce(i, before);
      }
    }
    expect(
      records
        .filter((r) => r.reason)
        .map((r) => r.location)
        .sort(),
    ).toEqual([...down].sort());

    before = logins();
    const streamed = invokeMany(undefined, aliases, work, { transport: transport(), sessionOptions });
    const seen: string[] = [];
    for await (const record of streamed) {
      seen.push(`${record.computerName}: ${record.stream === 'error' ? 'error' : record.data}`);
    }
    const results = await streamed.results;
    expect(results.filter((r) => r.info?.state === 'Completed')).toHaveLength(18);
    const failures = results.filter((r) => r.error);
    expect(failures.map((r) => [r.computerName, r.error!.code])).toEqual(
      [...down].map((alias) => [alias, SshErrorCode.ConnectRefused]),
    );
    expect(seen.sort()).toEqual(aliases.map((a) => `${a}: ${down.has(a) ? 'error' : 'ok'}`).sort());
    for (const i of upHosts) await loggedOnce(i, before);
  }, 120_000);

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

  it('host keys through the transport: unknown refused, accept-new recorded for OpenSSH, hashed, revoked', async () => {
    const box = await sshd();
    const dir = await tempDir('rjob-ssh-hostkeys-');
    const knownHosts = join(dir, 'known_hosts');
    const configFile = join(dir, 'config');
    await writeFile(
      configFile,
      `Host box1\n  HostName ${box.host}\n  Port ${box.port}\n  User rjobtest\n  IdentityFile ${box.clientKeyPath}\n` +
        `  UserKnownHostsFile ${knownHosts}\n  GlobalKnownHostsFile /dev/null\n`,
    );
    const base: SshTransportOptions = {
      sshConfig: { configFile, systemConfigFile: null },
      agent: false,
      agentCommand: 'exec cat',
    };
    const refusal = (transport: ReturnType<typeof sshTransport>) =>
      transport.connect('box1').then(
        (link) => {
          link.close();
          throw new Error('connected');
        },
        (error: RjobError) => error,
      );

    // Unknown, non-interactive (the default `ask` with nobody to ask): refused, and permanent so a
    // session does not keep retrying it.
    const unknown = await refusal(sshTransport(base));
    expect(unknown.code).toBe(SshErrorCode.HostKeyUnknown);
    expect(unknown.details?.permanent).toBe(true);
    expect(await readFile(knownHosts, 'utf8').catch(() => '')).toBe('');

    // accept-new records it; OpenSSH's own client, strict, then accepts the file.
    const link = await sshTransport({ ...base, strictHostKeyChecking: 'accept-new' }).connect('box1');
    link.close();
    expect((await readFile(knownHosts, 'utf8')).trim()).toBe(box.knownHostsLine);
    const openssh = () =>
      execFileSync('ssh', [
        ...['-F', '/dev/null', '-o', 'StrictHostKeyChecking=yes', '-o', `UserKnownHostsFile=${knownHosts}`],
        ...['-o', 'GlobalKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes'],
        ...['-i', box.clientKeyPath, '-p', String(box.port), `rjobtest@${box.host}`, 'echo accepted'],
      ]).toString();
    expect(openssh().trim()).toBe('accepted');

    // Hashed by ssh-keygen -H: the `[host]:port` name is only an HMAC now, and still matches.
    execFileSync('ssh-keygen', ['-H', '-f', knownHosts], { stdio: 'ignore' });
    const hashed = await readFile(knownHosts, 'utf8');
    expect(hashed).toMatch(/^\|1\|/);
    expect(hashed).not.toContain(box.host);
    const strict = sshTransport({ ...base, strictHostKeyChecking: 'yes' });
    const again = await strict.connect('box1');
    again.close();
    expect(await readFile(knownHosts, 'utf8')).toBe(hashed);

    // @revoked wins over the matching hashed line, whatever the policy.
    await writeFile(knownHosts, `${hashed}@revoked * ${box.hostKeys[0]!.publicKey}\n`);
    const revoked = await refusal(sshTransport({ ...base, strictHostKeyChecking: 'no' }));
    expect(revoked.code).toBe(SshErrorCode.HostKeyRevoked);
    expect(revoked.details?.permanent).toBe(true);
    expect(openssh).toThrow();
    await until(() => box.connectionPids().length === 0);
  });

  it('a refused login is permanent: the session stops reconnecting and keeps the SSH code', async () => {
    const box = await sshd();
    const stateDir = await agentStateDir();
    const dir = await tempDir('rjob-ssh-auth-');
    const strangerKey = join(dir, 'stranger');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', strangerKey]);
    const options = await configFor([entryOf('box1', box)]);
    const transport = sshTransport({ ...options, agentCommand: agentCommand(stateDir) });
    const refused = await openSession(
      sshTransport({ ...options, privateKey: await readFile(strangerKey) }),
      'box1',
    ).then(
      () => undefined,
      (error: unknown) => error as RjobError,
    );
    expect(refused?.code).toBe(SshErrorCode.AuthFailed);
    expect(refused?.details?.permanent).toBe(true);
    // The same through a session's reconnect: its loop stops at the permanent error at once.
    const session = await openSession(transport, 'box1', { name: 'auth' });
    try {
      const states: string[] = [];
      session.onStateChange((change) => states.push(change.state));
      await writeFile(join(box.dir, 'authorized_keys'), '');
      const loginsBefore = (box.logs().match(/Accepted publickey/g) ?? []).length;
      for (const pid of box.connectionPids().filter((p) => processName(p).startsWith('sshd')))
        process.kill(pid, 'SIGKILL');
      await until(() => session.state === 'Disconnected' && !session.reconnecting);
      expect(session.reason?.code).toBe(SshErrorCode.AuthFailed);
      expect((box.logs().match(/Accepted publickey/g) ?? []).length).toBe(loginsBefore);
      expect(states.every((s) => s === 'Disconnected')).toBe(true);
    } finally {
      await session.close();
    }
  });

  it('ProxyJump from ssh_config: a session reaches the target through a second sshd', async () => {
    const jump = await sshd('127.0.0.2');
    const box = await sshd('127.0.0.3', jump.clientKeyPath);
    const stateDir = await agentStateDir();
    const dir = await tempDir('rjob-ssh-jump-');
    const knownHosts = join(dir, 'known_hosts');
    await writeFile(knownHosts, `${jump.knownHostsLine}\n${box.knownHostsLine}\n`);
    const configFile = join(dir, 'config');
    await writeFile(
      configFile,
      `Host target\n  HostName ${box.host}\n  Port ${box.port}\n  ProxyJump gate\n` +
        `Host gate\n  HostName ${jump.host}\n  Port ${jump.port}\n` +
        `Host *\n  User rjobtest\n  IdentityFile ${jump.clientKeyPath}\n  StrictHostKeyChecking yes\n` +
        `  UserKnownHostsFile ${knownHosts}\n  GlobalKnownHostsFile /dev/null\n`,
    );
    const options: SshTransportOptions = { sshConfig: { configFile, systemConfigFile: null }, agent: false };
    const accepted = (f: SshdFixture) => (f.logs().match(/Accepted publickey/g) ?? []).length;
    const session = await openSession(
      sshTransport({ ...options, agentCommand: agentCommand(stateDir) }),
      'target',
    );
    try {
      const records = await session.invoke({ definition: { command: 'echo "via $SSH_CONNECTION"' } });
      const lines: string[] = [];
      for await (const record of records) lines.push(String(record.data));
      expect(lines).toHaveLength(1);
      // sshd reports the address it was reached on: the target's, over the jump's forwarding.
      expect(lines[0]!.split(' ')[3]).toBe(box.host);
      await until(() => accepted(jump) === 1 && accepted(box) === 1);
    } finally {
      await session.close();
    }
    // Both connections go with the last link.
    await until(() => jump.connectionPids().length === 0 && box.connectionPids().length === 0);

    // The jump host down: refused, with the jump's address in the coded error.
    await jump.stop();
    const refused = await sshTransport({ ...options, agentCommand: 'exec cat' })
      .connect('target')
      .then(
        () => undefined,
        (error: RjobError) => error,
      );
    expect(refused?.code).toBe(SshErrorCode.ConnectRefused);
    expect(refused?.details).toMatchObject({ host: jump.host, port: jump.port });
  });

  it('a host without the agent closes the link with ERR_SSH_NO_AGENT', async () => {
    const box = await sshd();
    const transport = sshTransport({
      ...(await configFor([entryOf('box1', box)])),
      // The default command, on a host where rjob is not installed; deploying it is tested in deploy.test.ts.
      deploy: 'never',
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

describe('defaultRemoteAgentSockets', () => {
  it("is the daemon's default socket in the usual home of the remote user", () => {
    expect(defaultRemoteAgentSockets({ user: 'alice' })).toEqual([
      '/home/alice/.local/state/rjob/agent.sock',
    ]);
    expect(defaultRemoteAgentSockets({ user: 'root' })).toEqual(['/root/.local/state/rjob/agent.sock']);
    // A user name that is not a plain name is not turned into a path.
    expect(defaultRemoteAgentSockets({ user: '../etc' })).toEqual([]);
    expect(defaultRemoteAgentSockets({ user: '..' })).toEqual([]);
  });
});
