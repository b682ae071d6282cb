/**
 * Nothing hangs on a Disconnected or ended session: against real agents over their Unix sockets,
 * a request on a session nobody is reconnecting is refused at once (ERR_SESSION_DISCONNECTED), a
 * fan-out over an open, a Disconnected and a closed session ends with one result and two coded
 * failures, and stopping a RemoteJob whose session is Disconnected returns: it reconnects when the
 * agent is there, and ends with a coded reason when it is not.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  invokeMany,
  JobManager,
  openSession,
  RjobError,
  type Session,
  unixSocketTransport,
  type WorkRequest,
} from '@rjob/core';
import { afterEach, describe, expect, it } from 'vitest';
import { listenUnix, type UnixDoor } from '../doors/unix-door.js';
import { AgentServer } from './agent-server.js';

interface Agent {
  dir: string;
  socket: string;
  server: AgentServer;
  door: UnixDoor;
}

const agents: Agent[] = [];
const sessions: Session<string>[] = [];
const managers: JobManager[] = [];

async function startAgent(): Promise<Agent> {
  const dir = await mkdtemp(join(tmpdir(), 'rjob-nohang-'));
  const server = new AgentServer({ stateDir: dir, defaultCwd: dir });
  const socket = join(dir, 'agent.sock');
  const door = await listenUnix(server, { socketPath: socket });
  const agent = { dir, socket, server, door };
  agents.push(agent);
  return agent;
}

async function stopAgent(agent: Agent): Promise<void> {
  await agent.door.close();
  await agent.server.close();
}

async function session(agent: Agent, name: string): Promise<Session<string>> {
  const s = await openSession(unixSocketTransport, agent.socket, { name, computerName: name });
  sessions.push(s);
  return s;
}

afterEach(async () => {
  for (const manager of managers.splice(0)) await manager.close().catch(() => {});
  for (const s of sessions.splice(0)) await s.close().catch(() => {});
  for (const agent of agents.splice(0)) {
    await stopAgent(agent).catch(() => {});
    await rm(agent.dir, { recursive: true, force: true });
  }
});

const echo = (text: string): WorkRequest => ({ definition: { command: `echo ${text}` } });
const SLEEP: WorkRequest = { definition: { command: 'sleep 300' } };

async function codeOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
    return undefined;
  } catch (error) {
    return RjobError.is(error) ? error.code : String(error);
  }
}

describe('a Disconnected session', () => {
  it('refuses a request at once with ERR_SESSION_DISCONNECTED, and takes it again after connect()', async () => {
    const agent = await startAgent();
    const s = await session(agent, 'one');
    await s.disconnect();
    expect(s.state).toBe('Disconnected');
    expect(await codeOf(s.jobs.get())).toBe('ERR_SESSION_DISCONNECTED');
    expect(await codeOf(s.invoke(echo('x')).result)).toBe('ERR_SESSION_DISCONNECTED');
    await s.connect();
    const lines: unknown[] = [];
    for await (const record of s.invoke(echo('back'))) lines.push(record.data);
    expect(lines).toContain('back');
  });

  it('a fan-out over an open, a Disconnected and a closed session ends with one result and two coded failures', async () => {
    const agent = await startAgent();
    const open = await session(agent, 'open');
    const away = await session(agent, 'away');
    const gone = await session(agent, 'gone');
    await away.disconnect();
    await gone.close();
    const invocation = invokeMany(undefined, [open, away, gone], echo('hi'));
    const lines: unknown[] = [];
    for await (const record of invocation) lines.push(record.data);
    const results = await invocation.results;
    const byName = Object.fromEntries(results.map((r) => [r.computerName, r]));
    expect(byName.open?.error).toBeUndefined();
    expect(byName.open?.info?.state).toBe('Completed');
    expect(lines).toEqual(['hi']);
    expect(byName.away?.error?.code).toBe('ERR_SESSION_DISCONNECTED');
    expect(byName.gone?.error?.code).toBe('ERR_SESSION_CLOSED');
    // The same as a job: the parent ends, one child Completed, two Failed with those codes.
    const jobs = new JobManager();
    managers.push(jobs);
    const parent = invokeMany(jobs, [open, away, gone], echo('hi'), { asJob: true });
    await jobs.wait(parent.id);
    expect(parent.children.map((child) => child.state).sort()).toEqual(['Completed', 'Failed', 'Failed']);
    expect(parent.children.map((child) => child.reason?.code).sort()).toEqual([
      'ERR_SESSION_CLOSED',
      'ERR_SESSION_DISCONNECTED',
      undefined,
    ]);
  });

  it('stopping a RemoteJob whose session is Disconnected reconnects and stops the remote work', async () => {
    const agent = await startAgent();
    const s = await session(agent, 'bg');
    const jobs = new JobManager();
    managers.push(jobs);
    const parent = invokeMany(jobs, [s], SLEEP, { asJob: true });
    const child = parent.children[0]!;
    await waitFor(() => child.state === 'Running');
    await s.disconnect();
    await waitFor(() => child.state === 'Disconnected');
    await jobs.stop(parent.id);
    expect(child.state).toBe('Stopped');
    expect(s.state).toBe('Opened');
    const remote = await s.jobs.get();
    expect(remote.every((r) => r.state === 'Stopped' || r.state === 'Completed')).toBe(true);
  });

  it('stopping a RemoteJob whose agent is gone returns: Stopped, with ERR_SESSION_DISCONNECTED as its reason', async () => {
    const agent = await startAgent();
    const s = await session(agent, 'lost');
    const jobs = new JobManager();
    managers.push(jobs);
    const parent = invokeMany(jobs, [s], SLEEP, { asJob: true });
    // A second session's RemoteJob on another agent is untouched by this one's failure.
    const other = await startAgent();
    const o = await session(other, 'other');
    const bystander = invokeMany(jobs, [o], echo('still here'), { asJob: true });
    const child = parent.children[0]!;
    await waitFor(() => child.state === 'Running');
    await s.disconnect();
    await stopAgent(agent);
    await jobs.stop(parent.id);
    // Stopped, as asked, and saying the remote side could not be reached to stop it there.
    expect(child.state).toBe('Stopped');
    expect(child.reason?.code).toBe('ERR_SESSION_DISCONNECTED');
    await jobs.wait(bystander.id);
    expect(bystander.state).toBe('Completed');
    const kept = await jobs.receive(bystander.id);
    expect(kept.map((record) => record.data)).toEqual(['still here']);
  });
});

describe('a RemoteJob stopped while it is still starting on a session that went Disconnected', () => {
  it('returns: the session cannot be connected for the stop, so it ends Stopped with ERR_SESSION_DISCONNECTED', async () => {
    const agent = await startAgent();
    const s = await session(agent, 'early');
    const jobs = new JobManager();
    managers.push(jobs);
    // Disconnected before the RemoteJob's start request goes out: it waits for a connect.
    const disconnecting = s.disconnect();
    const parent = invokeMany(jobs, [s], SLEEP, { asJob: true });
    await disconnecting;
    const child = parent.children[0]!;
    await stopAgent(agent);
    await jobs.stop(parent.id);
    // Stopped, as asked, and saying the remote side could not be reached to stop it there.
    expect(child.state).toBe('Stopped');
    expect(child.reason?.code).toBe('ERR_SESSION_DISCONNECTED');
  });
});

async function waitFor(check: () => Promise<boolean> | boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
