/**
 * `session.invoke(work, { disconnected: true })` (Invoke-Command -InDisconnectedSession) against a
 * real agent over its Unix socket: the work starts as a job, the session is left Disconnected, and
 * the output waits on the agent for this client after `connect` or for another one.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectSession, openSession, type Session, unixSocketTransport } from '@rjob/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { listenUnix, type UnixDoor } from '../doors/unix-door.js';
import { AgentServer } from './agent-server.js';

let dir: string;
let server: AgentServer;
let door: UnixDoor;
const sessions: Session<string>[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rjob-invoke-disc-'));
  server = new AgentServer({ stateDir: dir, defaultCwd: dir, computerName: 'disc-host' });
  door = await listenUnix(server, { socketPath: join(dir, 'agent.sock') });
});

afterEach(async () => {
  for (const session of sessions.splice(0)) await session.close().catch(() => {});
  await door.close();
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

describe('invoke with disconnected: true', () => {
  it('starts the job, leaves the session Disconnected, and keeps the output for later', async () => {
    const session = await openSession(unixSocketTransport, door.socketPath);
    sessions.push(session);
    const invocation = session.invoke(
      { definition: { command: 'echo one; sleep 0.3; echo two' } },
      { disconnected: true },
    );
    const streamed: unknown[] = [];
    for await (const record of invocation) streamed.push(record.data);
    const info = await invocation.result;
    expect(streamed).toEqual([]);
    expect(session.state).toBe('Disconnected');
    expect(['NotStarted', 'Running', 'Completed']).toContain(info.state);

    await session.connect();
    expect(session.state).toBe('Opened');
    await session.jobs.wait(info.id);
    const records = await session.jobs.receive(info.id);
    expect(records.map((r) => r.data)).toEqual(['one', 'two']);
  });

  it('lets another client take the session over and receive the job', async () => {
    const first = await openSession(unixSocketTransport, door.socketPath);
    sessions.push(first);
    const info = await first.invoke({ definition: { command: 'echo kept' } }, { disconnected: true }).result;
    const second = await connectSession(unixSocketTransport, door.socketPath, {
      sessionId: first.sessionId!,
      resumeSecret: first.resumeSecret!,
    });
    sessions.push(second);
    await second.jobs.wait(info.id);
    expect((await second.jobs.receive(info.id)).map((r) => r.data)).toEqual(['kept']);
  });

  it('fails with the coded start error and stays connected when the work is refused', async () => {
    const session = await openSession(unixSocketTransport, door.socketPath);
    sessions.push(session);
    const invocation = session.invoke({ type: 'nosuch', definition: {} }, { disconnected: true });
    const error = await invocation.result.catch((e: unknown) => e);
    expect((error as { code?: string }).code).toBe('ERR_UNKNOWN_JOB_TYPE');
    await expect(
      (async () => {
        for await (const _ of invocation) {
          // nothing
        }
      })(),
    ).rejects.toMatchObject({ code: 'ERR_UNKNOWN_JOB_TYPE' });
    // Nothing started, so nothing to leave running: the session is still usable.
    expect(session.state).toBe('Opened');
    expect((await session.invoke({ definition: { command: 'echo still' } }).result).state).toBe('Completed');
  });
});
