// The agent driven through core's session client (openSession / connectSession), over the Unix
// socket door: scenarios S4 and S5 through the library API.
import { mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  channelFromDuplex,
  connectSession,
  defineTransport,
  JobManager,
  openSession,
  RjobError,
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

describe('job.receiveToFile through the session client', () => {
  async function jobWithOutput(session: Session<string>): Promise<number> {
    const job = await session.jobs.start(
      { definition: { command: 'echo one; echo oops >&2; echo two' } },
      { name: 'events' },
    );
    await session.jobs.wait(job.id);
    return job.id;
  }

  it('writes the output stream to a file against the session cwd and hands back the other streams', async () => {
    const session = await openSession(unixTransport, door.socketPath, { computerName: 'server01' });
    sessions.push(session);
    await jobWithOutput(session);
    const written = await session.jobs.receiveToFile('events', 'events.txt');
    expect(written).toMatchObject({ path: join(dir, 'events.txt'), records: 2, bytes: 8 });
    expect(written.other.map((r) => [r.stream, r.data, r.computerName])).toEqual([
      ['error', 'oops', 'server01'],
    ]);
    expect(await readFile(join(dir, 'events.txt'), 'utf8')).toBe('one\ntwo\n');
    // Consumed, as Receive-Job without -Keep.
    expect(await session.jobs.receive('events')).toEqual([]);

    // keep leaves them; append adds to the file.
    const again = await session.jobs.start({ definition: { command: 'echo three' } }, { name: 'more' });
    await session.jobs.wait(again.id);
    const appended = await session.jobs.receiveToFile(again.id, join(dir, 'events.txt'), {
      keep: true,
      append: true,
    });
    expect(appended).toMatchObject({ records: 1, bytes: 6, other: [] });
    expect(await readFile(join(dir, 'events.txt'), 'utf8')).toBe('one\ntwo\nthree\n');
    expect((await session.jobs.receive(again.id)).map((r) => r.data)).toEqual(['three']);
  });

  it('a write that fails is ERR_FILE_WRITE with the OS code and consumes nothing', async () => {
    const session = await openSession(unixTransport, door.socketPath, { computerName: 'server01' });
    sessions.push(session);
    const id = await jobWithOutput(session);
    const missing = join(dir, 'no-such-dir', 'events.txt');
    const error = await session.jobs.receiveToFile(id, missing).catch((e: unknown) => e);
    expect(RjobError.hasCode(error, 'ERR_FILE_WRITE')).toBe(true);
    expect((error as RjobError).details).toMatchObject({ path: missing, osCode: 'ENOENT' });
    // A directory is no file either.
    await mkdir(join(dir, 'a-dir'));
    const notAFile = await session.jobs.receiveToFile(id, 'a-dir').catch((e: unknown) => e);
    expect((notAFile as RjobError).details).toMatchObject({ osCode: 'EISDIR' });
    // Every record is still there, once (stdout and stderr are separate pipes: no order between them).
    const records = await session.jobs.receive(id);
    expect(records.filter((r) => r.stream === 'output').map((r) => r.data)).toEqual(['one', 'two']);
    expect(records.filter((r) => r.stream === 'error').map((r) => r.data)).toEqual(['oops']);
    expect(records).toHaveLength(3);
    expect(await session.jobs.receive(id)).toEqual([]);
  });

  it('an agent without spools holds the records the same way', async () => {
    const memoryDir = await mkdtemp(join(tmpdir(), 'rjob-agent-mem-'));
    const memoryServer = new AgentServer({ stateDir: memoryDir, defaultCwd: memoryDir, persist: false });
    const memoryDoor = await listenUnix(memoryServer, { socketPath: join(memoryDir, 'run', 'agent.sock') });
    try {
      const session = await openSession(unixTransport, memoryDoor.socketPath, { computerName: 'server01' });
      sessions.push(session);
      const id = await jobWithOutput(session);
      const error = await session.jobs.receiveToFile(id, 'missing/events.txt').catch((e: unknown) => e);
      expect(RjobError.hasCode(error, 'ERR_FILE_WRITE')).toBe(true);
      expect(await session.jobs.receiveToFile(id, 'events.txt')).toMatchObject({ records: 2, bytes: 8 });
      expect(await readFile(join(memoryDir, 'events.txt'), 'utf8')).toBe('one\ntwo\n');
      expect(await session.jobs.receive(id)).toEqual([]);
      await session.close();
    } finally {
      await memoryDoor.close();
      await memoryServer.close();
      await rm(memoryDir, { recursive: true, force: true });
    }
  });
});

describe('job.startGroup through the session client', () => {
  it('S3 in a session: job.startGroup runs one child per host; the parent receives their records', async () => {
    const session = await openSession(unixTransport, door.socketPath, {
      name: 'fan',
      computerName: 'server01',
    });
    sessions.push(session);
    const parent = await session.jobs.startGroup({
      name: 'sys',
      type: 'RemoteJob',
      command: 'uname -a',
      throttleLimit: 1,
      children: [
        {
          definition: { command: 'echo up-a; echo more-a' },
          name: 'a',
          location: 'host-a',
          typeName: 'RemoteJob',
        },
        {
          definition: { command: 'echo partial-b; exit 4' },
          name: 'b',
          location: 'host-b',
          typeName: 'RemoteJob',
          command: 'uname -a',
        },
      ],
    });
    expect(parent).toMatchObject({
      name: 'sys',
      type: 'RemoteJob',
      location: 'host-a,host-b',
      command: 'uname -a',
    });
    expect(parent.childIds).toHaveLength(2);

    const [done] = await session.jobs.wait('sys');
    expect(done).toMatchObject({ state: 'Failed', reason: { code: 'ERR_CHILD_JOB_FAILED' } });
    const listed = await session.jobs.get({ names: ['sys'], includeChildren: true });
    expect(listed.map((job) => job.name)).toEqual(['sys']);
    const children = await session.jobs.get({ ids: parent.childIds, includeChildren: true });
    expect(children.map((job) => [job.name, job.type, job.location, job.state, job.command])).toEqual([
      ['a', 'RemoteJob', 'host-a', 'Completed', 'echo up-a; echo more-a'],
      ['b', 'RemoteJob', 'host-b', 'Failed', 'uname -a'],
    ]);
    expect(children[1]!.reason?.code).toBe('ERR_JOB_EXIT_CODE');

    // Another client takes the session over: the children's records are in their spools.
    const credentials = { sessionId: session.sessionId!, resumeSecret: session.resumeSecret! };
    await session.disconnect();
    const again = await connectSession(unixTransport, door.socketPath, {
      ...credentials,
      computerName: 'server01',
    });
    sessions.push(again);
    const records = await again.jobs.receive('sys', { keep: true });
    const shown = records.map((record) => [record.location, record.reason ? 'reason' : record.data]);
    expect(shown).toEqual([
      ['host-a', 'up-a'],
      ['host-a', 'more-a'],
      ['host-b', 'partial-b'],
      ['host-b', 'reason'],
    ]);
    expect(records.at(-1)?.data).toMatchObject({ code: 'ERR_JOB_EXIT_CODE' });
    await again.jobs.remove('sys');
    expect(await again.jobs.get({ includeChildren: true })).toEqual([]);
  });

  it('a group comes back whole after an agent restart: parent, children, their records', async () => {
    const session = await openSession(unixTransport, door.socketPath, { computerName: 'server01' });
    sessions.push(session);
    // A job before the group, removed: its id stays taken, so the group's ids are not the first.
    await session.jobs.start({ definition: { command: 'true' } }, { name: 'gone' });
    await session.jobs.wait('gone');
    await session.jobs.remove('gone');
    const parent = await session.jobs.startGroup({
      name: 'sys',
      type: 'RemoteJob',
      command: 'uname -s',
      children: [
        { definition: { command: 'echo from-a' }, name: 'a', location: 'host-a', typeName: 'RemoteJob' },
        {
          definition: { command: 'echo from-b; exit 4' },
          name: 'b',
          location: 'host-b',
          typeName: 'RemoteJob',
        },
      ],
    });
    await session.jobs.wait('sys');
    const before = await session.jobs.get({ includeChildren: true });
    const credentials = { sessionId: session.sessionId!, resumeSecret: session.resumeSecret! };
    await session.disconnect();

    // An orderly restart: the new agent reads the same state directory.
    await door.close();
    await server.close();
    server = new AgentServer({ stateDir: dir, defaultCwd: dir, computerName: 'server01' });
    await server.restore();
    door = await listenUnix(server, { socketPath: join(dir, 'run', 'agent.sock') });

    const again = await connectSession(unixTransport, door.socketPath, {
      ...credentials,
      computerName: 'server01',
    });
    sessions.push(again);
    const after = await again.jobs.get({ includeChildren: true });
    const columns = (jobs: typeof after) =>
      jobs.map((job) => [job.id, job.name, job.type, job.location, job.state, job.command, job.childIds]);
    expect(columns(after)).toEqual(columns(before));
    expect(after.map((job) => job.id)).toEqual([parent.id, ...parent.childIds]);
    const records = await again.jobs.receive('sys');
    expect(records.map((record) => [record.location, record.reason ? 'reason' : record.data])).toEqual([
      ['host-a', 'from-a'],
      ['host-b', 'from-b'],
      ['host-b', 'reason'],
    ]);
    expect(await again.jobs.receive('sys')).toMatchObject([{ reason: true, location: 'host-b' }]);
  });

  it('job.startGroup refuses an unknown child type and an empty group, starting nothing', async () => {
    const session = await openSession(unixTransport, door.socketPath, { computerName: 'server01' });
    sessions.push(session);
    await expect(
      session.jobs.startGroup({ children: [{ type: 'nope', definition: { command: 'true' } }] }),
    ).rejects.toMatchObject({ code: 'ERR_UNKNOWN_JOB_TYPE' });
    await expect(session.jobs.startGroup({ children: [] })).rejects.toMatchObject({
      code: 'ERR_INVALID_ARGUMENT',
    });
    expect(await session.jobs.get({ includeChildren: true })).toEqual([]);
  });
});
