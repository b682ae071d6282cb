// Scenarios S3 and S5 (SCENARIOS.md) through the library over wss:// on loopback: real agents, real
// `ws` listeners with generated self-signed certificates, clients pinning their fingerprints.
// S4 over wss is in ws-transport.test.ts.
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentServer } from '@rjob/agent';
import { connectSession, invokeMany, JobManager, openSession, RjobError, type Session } from '@rjob/core';
import { afterEach, describe, expect, it } from 'vitest';
import { createWsAuth } from './auth.js';
import { listenWs, type WsListener } from './listener.js';
import { wsTransport } from './ws-transport.js';

const TOKEN = 'scenario-token-0123456789abcdef';

interface Host {
  dir: string;
  agent: AgentServer;
  door: WsListener;
}

const hosts: Host[] = [];
const sessions: Session<string | URL>[] = [];
const managers: JobManager[] = [];

/** An agent on its own loopback address, with its own generated certificate. */
async function startHost(address: string, computerName: string): Promise<Host> {
  const dir = await mkdtemp(join(tmpdir(), 'rjob-ws-scenario-'));
  const auth = await createWsAuth({ stateDir: dir, tokens: { [TOKEN]: 'alice' } });
  const agent = new AgentServer({
    stateDir: dir,
    defaultCwd: dir,
    computerName,
    authenticate: auth.authenticate,
  });
  const door = await listenWs(agent, { listen: `wss://${address}:0`, auth });
  const host = { dir, agent, door };
  hosts.push(host);
  return host;
}

/** A loopback port nobody listens on: bound, then released. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function until(condition: () => Promise<boolean>): Promise<void> {
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, 20));
}

afterEach(async () => {
  for (const session of sessions.splice(0)) await session.close().catch(() => {});
  for (const manager of managers.splice(0)) await manager.close();
  for (const host of hosts.splice(0)) {
    await host.door.close();
    await host.agent.close();
    await rm(host.dir, { recursive: true, force: true });
  }
});

describe('scenarios over wss://', () => {
  it('S3: invokeMany asJob over two wss agents and one unreachable address', async () => {
    const one = await startHost('127.0.0.2', 'server01');
    const two = await startHost('127.0.0.3', 'server02');
    const unreachable = `wss://127.0.0.1:${await closedPort()}#sha256=${one.door.fingerprint}`;
    const names = new Map([
      [one.door.pinnedUrl, 'server01'],
      [two.door.pinnedUrl, 'server02'],
      [unreachable, 'server03'],
    ]);
    const manager = new JobManager();
    managers.push(manager);
    const parent = invokeMany(
      manager,
      [...names.keys()],
      { definition: { command: 'echo "$(uname -s) $PWD"' } },
      {
        asJob: true,
        name: 'sys',
        transport: wsTransport({ token: TOKEN }),
        computerName: (target) => names.get(String(target))!,
        sessionOptions: { autoReconnect: false },
      },
    );
    expect(parent).toMatchObject({ name: 'sys', type: 'RemoteJob', location: 'server01,server02,server03' });
    expect(parent.children.map((child) => child.location)).toEqual(['server01', 'server02', 'server03']);
    await manager.wait(parent);

    // The unreachable host fails its own child, with the transport's code, and so the parent.
    expect(parent.state).toBe('Failed');
    const [c1, c2, c3] = parent.children;
    expect(c1!.state).toBe('Completed');
    expect(c2!.state).toBe('Completed');
    expect(c3!.state).toBe('Failed');
    expect(c3!.reason?.code).toBe('ERR_WS_UNREACHABLE');

    // The other hosts' results still arrive, each record tagged with its computer, and each ran
    // on its own agent (its working directory is that agent's state directory).
    const records = await manager.receive(parent);
    const output = records.filter((r) => !r.reason && r.stream === 'output');
    const uname = (await import('node:os')).type();
    expect(output.map((r) => [r.location, r.data]).sort()).toEqual(
      [
        ['server01', `${uname} ${one.dir}`],
        ['server02', `${uname} ${two.dir}`],
      ].sort(),
    );
    const failed = records.filter((r) => r.reason);
    expect(failed.map((r) => r.location)).toEqual(['server03']);
    expect(RjobError.hasCode(failed[0]!.data, 'ERR_WS_UNREACHABLE')).toBe(true);
  });

  it('S5: disconnect, the job keeps running, a new client connects and receives every line once', async () => {
    const host = await startHost('127.0.0.1', 'server01');
    const marker = join(host.dir, 'done');
    const session = await openSession(wsTransport({ token: TOKEN }), host.door.pinnedUrl, {
      name: 'bg',
      computerName: 'server01',
    });
    sessions.push(session);
    await session.jobs.start({
      definition: {
        command: `for i in $(seq 60); do echo "Output $i"; sleep 0.005; done; touch "${marker}"`,
      },
    });
    const credentials = { sessionId: session.sessionId!, resumeSecret: session.resumeSecret! };
    await session.disconnect();
    expect(session.state).toBe('Disconnected');
    // The job goes on with nobody connected: its last act is observable on the agent's disk.
    await until(() =>
      stat(marker).then(
        () => true,
        () => false,
      ),
    );
    expect(host.agent.sessions('alice').map((s) => s.sessionId)).toEqual([credentials.sessionId]);

    // A new client: a fresh transport object and session, knowing only the URL, token and
    // the session's credentials (what `rjob session connect` persists).
    const other = await connectSession(wsTransport({ token: TOKEN }), host.door.pinnedUrl, {
      ...credentials,
      computerName: 'server01',
    });
    sessions.push(other);
    expect(other.state).toBe('Opened');
    const manager = new JobManager();
    managers.push(manager);
    const jobs = await other.receive({ outTarget: 'job', jobManager: manager });
    expect(jobs.length).toBe(1);
    const records = await manager.receive(jobs[0]!, { wait: true });
    expect(records.map((r) => r.data)).toEqual(Array.from({ length: 60 }, (_, i) => `Output ${i + 1}`));
    expect(jobs[0]!.state).toBe('Completed');
    // Consumed: nothing is delivered twice.
    expect(await manager.receive(jobs[0]!)).toEqual([]);
  });
});
