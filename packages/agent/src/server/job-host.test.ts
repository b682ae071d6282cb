// The agent's job host (the user's local jobs) through core's session client: sessions opened with
// `host: true` share one job table, none takes another over, and the jobs outlive each of them
// and the agent itself.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSession, type Session, unixSocketTransport } from '@rjob/core';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { listenUnix, type UnixDoor } from '../doors/unix-door.js';
import { AgentServer } from './agent-server.js';

let dir: string;
let server: AgentServer;
let door: UnixDoor;
const sessions: Session<string>[] = [];

async function startAgent(): Promise<void> {
  server = new AgentServer({ stateDir: dir, defaultCwd: dir, computerName: 'host01' });
  await server.restore();
  door = await listenUnix(server, { socketPath: join(dir, 'run', 'agent.sock') });
}

async function hostSession(): Promise<Session<string>> {
  const session = await openSession(unixSocketTransport, door.socketPath, {
    host: true,
    autoReconnect: false,
  });
  sessions.push(session);
  return session;
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rjob-host-'));
  await startAgent();
});

afterEach(async () => {
  for (const session of sessions.splice(0)) await session.close().catch(() => {});
  await door.close();
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

it('shares one job table between host sessions used at once; closing one leaves the jobs', async () => {
  const [a, b, c] = await Promise.all([hostSession(), hostSession(), hostSession()]);
  const started = await Promise.all(
    [a, b, c].map((session, i) =>
      session.jobs.start({ definition: { command: `echo ${i}` }, name: `j${i}` }),
    ),
  );
  expect(new Set(started.map((job) => job.id)).size).toBe(3);
  // Every session sees every job, whichever started it; all of them still work afterwards.
  for (const session of [a, b, c]) {
    expect((await session.jobs.get()).map((job) => job.name).sort()).toEqual(['j0', 'j1', 'j2']);
  }
  await a.close();
  await b.jobs.wait('j0');
  expect((await b.jobs.receive('j0')).map((record) => record.data)).toEqual(['0']);
  expect((await c.jobs.get()).map((job) => job.name).sort()).toEqual(['j0', 'j1', 'j2']);
  // The host and the sessions on it are not sessions a user opened.
  expect(await c.list()).toEqual([]);
});

it('ends a host session closed without waiting (close message only) on the agent; the jobs stay', async () => {
  const a = await hostSession();
  await a.jobs.start({ definition: { command: 'echo kept' }, name: 'kept' });
  const id = a.sessionId!;
  expect(server.session(id)?.state).toBe('Opened');
  await a.close({ wait: false });
  expect(a.state).toBe('Closed');
  // No answer was awaited: the agent ends the session when it reads the `close` message.
  await expect.poll(() => server.session(id)).toBeUndefined();
  const b = await hostSession();
  await b.jobs.wait('kept');
  expect((await b.jobs.receive('kept')).map((record) => record.data)).toEqual(['kept']);
});

it('answers a repeated start with the same requestKey with the job it started, once', async () => {
  const session = await hostSession();
  const work = { definition: { command: 'echo once' }, name: 'keyed', requestKey: 'k-1' };
  const [first, second] = await Promise.all([session.jobs.start(work), session.jobs.start(work)]);
  const third = await (await hostSession()).jobs.start(work);
  expect(second.id).toBe(first.id);
  expect(third.id).toBe(first.id);
  expect((await session.jobs.get()).map((job) => job.id)).toEqual([first.id]);
});

it('keeps the host jobs and their unreceived output across an agent restart', async () => {
  const session = await hostSession();
  await session.jobs.start({ definition: { command: 'seq 1 5' }, name: 'kept' });
  await session.jobs.wait('kept');
  await session.close();
  sessions.length = 0;
  await door.close();
  await server.close();
  await startAgent();
  const again = await hostSession();
  const [job] = await again.jobs.get();
  expect(job).toMatchObject({ name: 'kept', state: 'Completed', hasMoreData: true });
  expect((await again.jobs.receive('kept')).map((record) => record.data)).toEqual(['1', '2', '3', '4', '5']);
});
