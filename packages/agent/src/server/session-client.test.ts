// The agent driven through core's session client (openSession / connectSession), over the Unix
// socket door: scenarios S4 and S5 through the library API.
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  channelFromDuplex,
  connectSession,
  defineTransport,
  JobManager,
  openSession,
  type Session,
  type TransportChannel,
} from '@rjob/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { listenUnix, type UnixDoor } from '../doors/unix-door.js';
import { AgentServer } from './agent-server.js';

const unixTransport = defineTransport<string>({
  name: 'unix',
  connect: (socketPath, { maxFrameBytes }) =>
    new Promise<TransportChannel>((resolve, reject) => {
      const socket = createConnection(socketPath);
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(channelFromDuplex(socket, { maxFrameBytes }));
      });
    }),
});

let dir: string;
let server: AgentServer;
let door: UnixDoor;
const sessions: Session<string>[] = [];
const managers: JobManager[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rjob-agent-lib-'));
  server = new AgentServer({ stateDir: dir, defaultCwd: dir, computerName: 'server01' });
  door = await listenUnix(server, { socketPath: join(dir, 'run', 'agent.sock') });
});

afterEach(async () => {
  for (const session of sessions.splice(0)) await session.close().catch(() => {});
  for (const manager of managers.splice(0)) await manager.close();
  await door.close();
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

async function until(condition: () => Promise<boolean> | boolean): Promise<void> {
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, 20));
}

describe('the agent through the session client', () => {
  it('S4: a job started in a session keeps its results on the agent', async () => {
    const session = await openSession(unixTransport, door.socketPath, {
      name: 's1',
      computerName: 'server01',
    });
    sessions.push(session);
    const job = await session.jobs.start(
      { definition: { command: 'echo a.conf; echo b.conf' } },
      { name: 'audit' },
    );
    await session.jobs.wait('audit');
    const [listed] = await session.jobs.get();
    expect(listed).toMatchObject({ id: job.id, name: 'audit', location: 'localhost', state: 'Completed' });
    const first = await session.jobs.receive('audit', { keep: true });
    const second = await session.jobs.receive('audit', { keep: true });
    expect(first.map((r) => r.data)).toEqual(['a.conf', 'b.conf']);
    expect(second.map((r) => r.data)).toEqual(['a.conf', 'b.conf']);
  });

  it('S5: disconnect, the job goes on, connect from another client and receive everything once', async () => {
    const marker = join(dir, 'done');
    const session = await openSession(unixTransport, door.socketPath, {
      name: 'bg',
      computerName: 'server01',
    });
    sessions.push(session);
    await session.jobs.start({
      definition: {
        command: `for i in $(seq 60); do echo "Output $i"; sleep 0.002; done; touch "${marker}"`,
      },
    });
    const credentials = { sessionId: session.sessionId!, resumeSecret: session.resumeSecret! };
    await session.disconnect();
    expect(session.state).toBe('Disconnected');
    await until(() =>
      stat(marker).then(
        () => true,
        () => false,
      ),
    );

    // Another client (the first one is gone) connects with the session's credentials.
    const other = await connectSession(unixTransport, door.socketPath, {
      ...credentials,
      computerName: 'server01',
    });
    sessions.push(other);
    const manager = new JobManager();
    managers.push(manager);
    const [local] = await other.receive({ outTarget: 'job', jobManager: manager });
    expect(local).toBeDefined();
    const records = await manager.receive(local!, { wait: true });
    expect(records.map((r) => r.data)).toEqual(Array.from({ length: 60 }, (_, i) => `Output ${i + 1}`));
  });
});
