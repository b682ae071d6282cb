import { type ChildProcess, spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { channelFromDuplex, defineTransport, type JobRecord, openSession, RjobError } from '@rjob/core';
import type { EventMessage } from '@rjob/core/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DAEMON_PID_FILE } from '../cli-main.js';
import {
  AGENT_ENTRY,
  eventRecords,
  killChildren,
  receivedRecords,
  stdioConnector,
  TestClient,
  unixConnector,
} from '../fixtures/agent-test-client.js';
import { AgentServer } from '../server/agent-server.js';
import { listenUnix, socketIsLive, type UnixDoor } from './unix-door.js';

let dir: string;
const children: ChildProcess[] = [];
const clients: TestClient[] = [];
const doors: UnixDoor[] = [];
const servers: AgentServer[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rjob-doors-'));
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.dispose();
  await killChildren(children);
  await stopDaemon(dir);
  for (const door of doors.splice(0)) await door.close();
  for (const server of servers.splice(0)) await server.close();
  await rm(dir, { recursive: true, force: true });
});

/** Stops a daemon the bridge started in `stateDir`: SIGTERM, and SIGKILL to its group if it lingers. */
async function stopDaemon(stateDir: string): Promise<void> {
  const pid = Number((await readFile(join(stateDir, DAEMON_PID_FILE), 'utf8').catch(() => '')).trim());
  if (!pid) return;
  const alive = (): boolean => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  if (!alive()) return;
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 250 && alive(); i++) await new Promise((resolve) => setTimeout(resolve, 20));
  if (alive()) process.kill(-pid, 'SIGKILL');
}

function codeOf(promise: Promise<unknown>): Promise<string | undefined> {
  return promise.then(
    () => undefined,
    (error: unknown) => (RjobError.is(error) ? error.code : String(error)),
  );
}

async function until(condition: () => Promise<boolean> | boolean): Promise<void> {
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, 20));
}

function waitForExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

describe('listenUnix', () => {
  it('makes a 0600 socket in a 0700 directory and refuses a second live agent', async () => {
    const server = new AgentServer({ stateDir: dir });
    servers.push(server);
    const socketPath = join(dir, 'run', 'agent.sock');
    const door = await listenUnix(server, { socketPath });
    doors.push(door);
    expect((await stat(join(dir, 'run'))).mode & 0o777).toBe(0o700);
    expect((await stat(socketPath)).mode & 0o777).toBe(0o600);
    expect(await socketIsLive(socketPath)).toBe(true);
    expect(await codeOf(listenUnix(server, { socketPath }))).toBe('ERR_AGENT_RUNNING');
    // The refused attempt did not disturb the live one.
    const client = await TestClient.open(unixConnector(socketPath));
    clients.push(client);
    expect(await client.request('session.info')).toMatchObject({ state: 'Opened' });
  });

  it('replaces a stale socket left by a dead agent and refuses a shared directory', async () => {
    const socketPath = join(dir, 'agent.sock');
    const dead = spawn(process.execPath, [
      '-e',
      `require('node:net').createServer().listen(${JSON.stringify(socketPath)}, () => console.log('up'))`,
    ]);
    children.push(dead);
    await new Promise((resolve) => dead.stdout!.once('data', resolve));
    dead.kill('SIGKILL');
    await waitForExit(dead);
    expect((await stat(socketPath)).isSocket()).toBe(true);
    expect(await socketIsLive(socketPath)).toBe(false);

    const server = new AgentServer({ stateDir: dir });
    servers.push(server);
    const door = await listenUnix(server, { socketPath });
    doors.push(door);
    expect(await socketIsLive(socketPath)).toBe(true);

    const shared = join(dir, 'shared');
    await mkdir(shared);
    await chmod(shared, 0o755);
    expect(await codeOf(listenUnix(server, { socketPath: join(shared, 'agent.sock') }))).toBe(
      'ERR_SOCKET_DIR_INSECURE',
    );
  });
});

describe('the agent over stdio', () => {
  it('--stdio bridges to a daemon it starts; the session outlives the bridge (S4 over stdio)', async () => {
    const args = ['--stdio', '--state-dir', dir, '--socket', join(dir, 'run', 'agent.sock')];
    const connect = stdioConnector(args, children);
    const client = await TestClient.open(connect);
    clients.push(client);
    const job = await client.request('job.start', {
      name: 'audit',
      definition: { command: 'for f in a b c; do echo "$f.conf"; done' },
    });
    await client.request('job.wait', { selector: job.id });
    const first = receivedRecords(await client.request('job.receive', { selector: 'audit', keep: true }));
    expect(first.map((r) => r.data)).toEqual(['a.conf', 'b.conf', 'c.conf']);

    // Kill the bridge: the daemon keeps the session; a new bridge resumes it.
    const bridge = children.at(-1)!;
    client.cut();
    await waitForExit(bridge);
    await client.resume();
    expect(receivedRecords(await client.request('job.receive', { selector: 'audit', keep: true }))).toEqual(
      first,
    );
    expect(await client.request('job.get', {})).toMatchObject([{ name: 'audit', location: 'localhost' }]);

    // Invoke streams over the same bridge.
    const records: JobRecord[] = [];
    client.onEvent((event: EventMessage) => {
      records.push(...(eventRecords(event, 'inv') ?? []));
    });
    const info = await client.request('invoke', {
      subscriptionId: 'inv',
      definition: { command: 'echo hello' },
    });
    expect(info.state).toBe('Completed');
    expect(records.map((r) => r.data)).toEqual(['hello']);

    // Both bridges talked to one daemon, which wrote its pid and log to the state directory.
    expect(Number(await readFile(join(dir, DAEMON_PID_FILE), 'utf8'))).toBeGreaterThan(0);
    expect(await readFile(join(dir, 'agent.log'), 'utf8')).toContain('listening on');
  });

  it('S5 through the session client over --stdio: disconnect, reconnect, every record once', async () => {
    const socketPath = join(dir, 'run', 'agent.sock');
    const stdioTransport = defineTransport<string>({
      name: 'stdio',
      connect: async (stateDir) => {
        const child = spawn(
          process.execPath,
          [
            '--conditions=@rjob/source',
            '--import',
            'tsx',
            AGENT_ENTRY,
            '--stdio',
            '--state-dir',
            stateDir,
            '--socket',
            socketPath,
          ],
          { stdio: ['pipe', 'pipe', 'inherit'] },
        );
        children.push(child);
        return channelFromDuplex({ readable: child.stdout!, writable: child.stdin! });
      },
    });
    const marker = join(dir, 'done');
    const session = await openSession(stdioTransport, dir, { name: 'bg', computerName: 'localhost' });
    const job = await session.jobs.start({
      definition: {
        command: `for i in $(seq 60); do echo "Output $i"; sleep 0.002; done; touch "${marker}"`,
      },
    });
    await session.disconnect();
    await until(() =>
      stat(marker).then(
        () => true,
        () => false,
      ),
    );
    await session.connect();
    const records = await session.jobs.receive(job.id);
    expect(records.map((r) => r.data)).toEqual(Array.from({ length: 60 }, (_, i) => `Output ${i + 1}`));
    expect(await session.jobs.receive(job.id)).toEqual([]);
    await session.close();
  });

  it('--stdio --no-daemon serves one link in-process and exits when it closes', async () => {
    const connect = stdioConnector(['--stdio', '--no-daemon', '--state-dir', dir], children);
    const client = await TestClient.open(connect);
    clients.push(client);
    const records: JobRecord[] = [];
    client.onEvent((event: EventMessage) => {
      records.push(...(eventRecords(event, 's') ?? []));
    });
    await client.request('invoke', {
      subscriptionId: 's',
      type: 'thread',
      definition: { eval: 'yield "from a thread"' },
    });
    expect(records.map((r) => r.data)).toEqual(['from a thread']);
    const child = children.at(-1)!;
    child.stdin!.end();
    await waitForExit(child);
    expect(child.exitCode).toBe(0);
  });
});

describe('the agent daemon across a SIGKILL', () => {
  it('restarts with finished jobs and their records; a running job comes back Failed "agent restarted"', async () => {
    const socketPath = join(dir, 'run', 'agent.sock');
    const startDaemonProcess = async (): Promise<ChildProcess> => {
      const daemon = spawn(
        process.execPath,
        [
          '--conditions=@rjob/source',
          '--import',
          'tsx',
          AGENT_ENTRY,
          'daemon',
          '--state-dir',
          dir,
          '--socket',
          socketPath,
        ],
        { stdio: ['ignore', 'inherit', 'inherit'] },
      );
      children.push(daemon);
      await until(() => socketIsLive(socketPath));
      return daemon;
    };
    const first = await startDaemonProcess();
    const client = await TestClient.open(unixConnector(socketPath));
    clients.push(client);
    const done = await client.request('job.start', {
      name: 'done',
      definition: { command: 'echo x; echo y' },
    });
    await client.request('job.wait', { selector: done.id });
    const running = await client.request('job.start', {
      name: 'running',
      definition: { command: 'sleep 30' },
    });
    first.kill('SIGKILL');
    await waitForExit(first);
    client.cut();

    await startDaemonProcess();
    // A new client (the old one's channel state died with the agent) takes the session back.
    const heir = new TestClient(unixConnector(socketPath));
    clients.push(heir);
    await heir.resume({ sessionId: client.sessionId, resumeSecret: client.resumeSecret });
    expect(await heir.request('session.info')).toMatchObject({
      sessionId: client.sessionId,
      state: 'Opened',
    });
    const jobs = await heir.request('job.get', {});
    expect(jobs.map((job) => [job.id, job.name, job.state])).toEqual([
      [done.id, 'done', 'Completed'],
      [running.id, 'running', 'Failed'],
    ]);
    expect(jobs[1]?.reason).toMatchObject({ code: 'ERR_AGENT_RESTARTED', message: 'agent restarted' });
    expect(
      receivedRecords(await heir.request('job.receive', { selector: 'done', keep: true })).map((r) => r.data),
    ).toEqual(['x', 'y']);
    expect(receivedRecords(await heir.request('job.receive', { selector: 'running' }))).toMatchObject([
      { reason: true, data: { code: 'ERR_AGENT_RESTARTED' } },
    ]);
    // Receiving consumes on the restarted agent as before.
    expect(
      receivedRecords(await heir.request('job.receive', { selector: 'done' })).map((r) => r.data),
    ).toEqual(['x', 'y']);
    expect(receivedRecords(await heir.request('job.receive', { selector: 'done' }))).toEqual([]);
  });
});
