// `agent.info` and `agent.stop` through core's session client against a real AgentServer on a
// Unix socket: what they report, their parameter checks, and who may stop the agent.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSession, RjobError, type Session, unixSocketTransport } from '@rjob/core';
import { afterEach, expect, it } from 'vitest';
import { listenUnix, type UnixDoor } from '../doors/unix-door.js';
import { AgentServer } from './agent-server.js';
import type { AgentServerOptions } from './agent-server-options.js';

let dir: string | undefined;
let server: AgentServer | undefined;
let door: UnixDoor | undefined;
const sessions: Session<string>[] = [];

async function startAgent(options: Partial<AgentServerOptions> = {}): Promise<string> {
  dir = await mkdtemp(join(tmpdir(), 'rjob-control-'));
  server = new AgentServer({
    stateDir: dir,
    defaultCwd: dir,
    persist: false,
    software: 'test/1',
    ...options,
  });
  door = await listenUnix(server, { socketPath: join(dir, 'agent.sock') });
  return door.socketPath;
}

async function open(socket: string, host = false): Promise<Session<string>> {
  const session = await openSession(unixSocketTransport, socket, { autoReconnect: false, host });
  sessions.push(session);
  return session;
}

afterEach(async () => {
  for (const session of sessions.splice(0)) await session.close({ wait: false }).catch(() => {});
  await door?.close();
  await server?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

it('agent.info: this process, the other sessions and the jobs; the first client is told so', async () => {
  const socket = await startAgent();
  const first = await open(socket);
  expect(await first.request('agent.info')).toMatchObject({
    software: 'test/1',
    pid: process.pid,
    sessions: 0,
    jobs: 0,
    runningJobs: 0,
    firstClient: true,
  });
  const host = await open(socket, true);
  const job = await host.jobs.start({ definition: { command: 'sleep 30' }, name: 'long' });
  await host.jobs.start({ definition: { command: 'true' }, name: 'short' });
  const second = await open(socket);
  const info = await second.request('agent.info');
  // `first` is another session; the job host is not one, but its jobs count.
  expect(info).toMatchObject({ sessions: 1, jobs: 2, firstClient: false });
  expect(info.runningJobs).toBeGreaterThanOrEqual(1);
  expect(info.uptimeMs).toBeGreaterThanOrEqual(0);
  await host.jobs.stop(job.id);
});

it('agent.info and agent.stop refuse parameters; an embedded agent refuses agent.stop', async () => {
  const socket = await startAgent();
  const session = await open(socket);
  const bad = await (session.request as (m: string, p: unknown) => Promise<unknown>)('agent.info', {
    x: 1,
  }).catch((error: unknown) => error);
  expect(RjobError.hasCode(bad, 'ERR_INVALID_ARGUMENT')).toBe(true);
  const refused = await session.request('agent.stop').catch((error: unknown) => error);
  expect(RjobError.hasCode(refused, 'ERR_AGENT_STOP_UNSUPPORTED')).toBe(true);
  // Still serving.
  expect((await session.request('agent.info')).pid).toBe(process.pid);
});

it('agent.stop answers, then calls onStopRequested', async () => {
  let stopRequested!: () => void;
  const requested = new Promise<void>((resolve) => (stopRequested = resolve));
  let calls = 0;
  const socket = await startAgent({
    onStopRequested: () => {
      calls++;
      stopRequested();
    },
  });
  const session = await open(socket);
  const answer = await session.request('agent.stop');
  expect(answer).toMatchObject({ software: 'test/1', pid: process.pid });
  await requested;
  expect(calls).toBe(1);
});
