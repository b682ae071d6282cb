/**
 * `invokeMany(…, { disconnected: true })` (Invoke-Command -ComputerName a,b -InDisconnectedSession)
 * against real agents over their Unix sockets: each reachable target gets a Disconnected session
 * with the work running in it, an unreachable one only its coded error, and the returned session id
 * and resume secret are enough to come back for every record.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  connectSession,
  defineTransport,
  type DisconnectedFanOutResult,
  invokeMany,
  JobManager,
  openSession,
  type Session,
  type SessionInfo,
  type TransportChannel,
  unixSocketTransport,
  type WorkRequest,
} from '@rjob/core';
import { afterEach, describe, expect, it } from 'vitest';
import { listenUnix, type UnixDoor } from '../doors/unix-door.js';
import { AgentServer } from './agent-server.js';

interface Agent {
  name: string;
  dir: string;
  server: AgentServer;
  door: UnixDoor;
}

const agents: Agent[] = [];
const dirs: string[] = [];
const sessions: Session<string>[] = [];

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'rjob-many-disc-'));
  dirs.push(dir);
  return dir;
}

async function startAgents(count: number): Promise<Agent[]> {
  const started: Agent[] = [];
  for (let i = 1; i <= count; i++) {
    const dir = await tempDir();
    const name = `host${i}`;
    const server = new AgentServer({ stateDir: dir, defaultCwd: dir, computerName: name });
    const door = await listenUnix(server, { socketPath: join(dir, 'agent.sock') });
    const agent = { name, dir, server, door };
    agents.push(agent);
    started.push(agent);
  }
  return started;
}

afterEach(async () => {
  for (const session of sessions.splice(0)) await session.close().catch(() => {});
  for (const agent of agents.splice(0)) {
    await agent.door.close();
    await agent.server.close();
  }
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

/** The unix transport, counting the links open at once (connect called, link not yet closed). */
function countingTransport() {
  const counts = { open: 0, max: 0, connects: 0 };
  const transport = defineTransport<string>({
    name: 'counting-unix',
    async connect(target, options) {
      counts.connects++;
      counts.open++;
      counts.max = Math.max(counts.max, counts.open);
      let link: TransportChannel;
      try {
        link = await unixSocketTransport.connect(target, options);
      } catch (error) {
        counts.open--;
        throw error;
      }
      let closed = false;
      const gone = (): void => {
        if (closed) return;
        closed = true;
        counts.open--;
      };
      link.onClose(gone);
      return {
        send: (frame) => link.send(frame),
        onMessage: (handler) => link.onMessage(handler),
        onClose: (handler) => link.onClose(handler),
        ...(link.onDrain ? { onDrain: (handler: () => void) => link.onDrain!(handler) } : {}),
        ...(link.maxFrameBytes === undefined ? {} : { maxFrameBytes: link.maxFrameBytes }),
        close: (reason) => {
          gone();
          link.close(reason);
        },
      };
    },
  });
  return { transport, counts };
}

/** Work that prints `one`, then holds until `gate` exists (at most 20 s), then prints `two`. */
function gatedWork(gate: string): WorkRequest {
  return {
    definition: {
      command: `echo one; i=0; while [ ! -f '${gate}' ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; echo two`,
    },
  };
}

/** What the agent itself says about its sessions, asked through a session of our own. */
async function sessionsOn(agent: Agent): Promise<SessionInfo[]> {
  const probe = await openSession(unixSocketTransport, agent.door.socketPath);
  try {
    const list = await probe.list();
    return list.filter((info) => info.sessionId !== probe.sessionId);
  } finally {
    await probe.close();
  }
}

function started<Target>(result: DisconnectedFanOutResult<Target>) {
  if (result.error) throw new Error(`expected a session, got ${result.error.code}: ${result.error.message}`);
  return result;
}

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  return undefined;
}

describe('invokeMany with disconnected: true', () => {
  it('leaves a Disconnected session with the job running on every reachable target; the unreachable one is only an error', async () => {
    const hosts = await startAgents(3);
    const gate = join(await tempDir(), 'go');
    const missing = join(await tempDir(), 'no-agent.sock');
    const targets = [
      hosts[0]!.door.socketPath,
      missing,
      hosts[1]!.door.socketPath,
      hosts[2]!.door.socketPath,
    ];
    const names = new Map(targets.map((t, i) => [t, ['host1', 'nowhere', 'host2', 'host3'][i]!]));

    const results = await invokeMany(undefined, targets, gatedWork(gate), {
      disconnected: true,
      transport: unixSocketTransport,
      computerName: (target) => names.get(target)!,
    });

    expect(results.map((r) => r.computerName)).toEqual(['host1', 'nowhere', 'host2', 'host3']);
    const unreachable = results[1]!;
    expect(unreachable.error?.code).toBe('ERR_AGENT_UNREACHABLE');
    expect(unreachable.target).toBe(missing);

    const reached = [results[0]!, results[2]!, results[3]!].map(started);
    for (const [i, result] of reached.entries()) {
      const agent = hosts[i]!;
      expect(result.target).toBe(agent.door.socketPath);
      // Not named by the caller: the agent's own name, as `session.info` gives it.
      expect(result.sessionName).toMatch(/^Session-/);
      expect(result.sessionInfo).toMatchObject({
        sessionId: result.sessionId,
        name: result.sessionName,
        computerName: agent.name,
        state: 'Disconnected',
        availability: 'None',
        runningJobs: 1,
      });
      expect(['NotStarted', 'Running']).toContain(result.job.state);
      // On the agent: one Disconnected session, holding the job that cannot end before the gate opens.
      const held = await sessionsOn(agent);
      expect(held).toHaveLength(1);
      expect(held[0]).toMatchObject({
        sessionId: result.sessionId,
        name: result.sessionName,
        state: 'Disconnected',
        runningJobs: 1,
      });
    }

    await writeFile(gate, '');
    for (const [i, result] of reached.entries()) {
      const back = await connectSession(unixSocketTransport, hosts[i]!.door.socketPath, {
        sessionId: result.sessionId,
        resumeSecret: result.resumeSecret,
      });
      sessions.push(back);
      expect(back.state).toBe('Opened');
      const [done] = await back.jobs.wait(result.job.id);
      expect(done?.state).toBe('Completed');
      expect((await back.jobs.receive(result.job.id)).map((r) => r.data)).toEqual(['one', 'two']);
    }
  });

  it('names the sessions with sessionName, and keeps a given open Session as it is', async () => {
    const [first, second] = await startAgents(2);
    const gate = join(await tempDir(), 'go');
    await writeFile(gate, '');
    const given = await openSession(unixSocketTransport, second!.door.socketPath, { name: 'mine' });
    sessions.push(given);
    const sessionName = (target: string, index: number) =>
      `Fan${index + 1}-${target === first!.door.socketPath}`;

    const results = await invokeMany(undefined, [first!.door.socketPath, given], gatedWork(gate), {
      disconnected: true,
      transport: unixSocketTransport,
      sessionName,
    });

    const opened = started(results[0]!);
    expect(opened.sessionName).toBe('Fan1-true');
    expect((await sessionsOn(first!)).map((info) => info.name)).toEqual(['Fan1-true']);

    const reused = started(results[1]!);
    expect(reused).toMatchObject({
      sessionName: 'mine',
      sessionId: given.sessionId,
      resumeSecret: given.resumeSecret,
      target: second!.door.socketPath,
    });
    // The caller's own session object, left Disconnected: it comes back with connect().
    expect(given.state).toBe('Disconnected');
    await given.connect();
    await given.jobs.wait(reused.job.id);
    expect((await given.jobs.receive(reused.job.id)).map((r) => r.data)).toEqual(['one', 'two']);
  });

  it('refuses a given Session that is not Opened for that target only, without waiting for it', async () => {
    const [host] = await startAgents(1);
    const left = await openSession(unixSocketTransport, host!.door.socketPath, { name: 'left' });
    sessions.push(left);
    await left.disconnect();

    const results = await invokeMany(
      undefined,
      [left, host!.door.socketPath],
      { definition: { command: 'echo fine' } },
      { disconnected: true, transport: unixSocketTransport },
    );

    expect(results[0]!.error?.code).toBe('ERR_SESSION_NOT_OPENED');
    expect(left.state).toBe('Disconnected');
    const other = started(results[1]!);
    expect((await sessionsOn(host!)).map((info) => info.sessionId).sort()).toEqual(
      [left.sessionId, other.sessionId].sort(),
    );
  });

  it('closes a session whose job could not start; the error is the agent’s code, the others are untouched', async () => {
    const [host] = await startAgents(1);
    const missing = join(await tempDir(), 'no-agent.sock');

    const results = await invokeMany(
      undefined,
      [host!.door.socketPath, missing],
      { type: 'nosuch', definition: {} },
      { disconnected: true, transport: unixSocketTransport },
    );

    expect(results[0]!.error?.code).toBe('ERR_UNKNOWN_JOB_TYPE');
    expect(results[1]!.error?.code).toBe('ERR_AGENT_UNREACHABLE');
    // Not left behind on the agent.
    expect(await sessionsOn(host!)).toEqual([]);
  });

  it('refuses asJob and onRecord with ERR_INVALID_ARGUMENT before connecting anywhere', async () => {
    const [host] = await startAgents(1);
    const { transport, counts } = countingTransport();
    const work: WorkRequest = { definition: { command: 'true' } };
    const targets = [host!.door.socketPath];

    const withAsJob = thrown(() =>
      invokeMany(new JobManager(), targets, work, { disconnected: true, asJob: true, transport } as never),
    );
    expect(withAsJob).toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    const withOnRecord = thrown(() =>
      invokeMany(undefined, targets, work, { disconnected: true, onRecord: () => {}, transport } as never),
    );
    expect(withOnRecord).toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    const withoutTransport = thrown(() => invokeMany(undefined, targets, work, { disconnected: true }));
    expect(withoutTransport).toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });

    expect(counts.connects).toBe(0);
    expect(await sessionsOn(host!)).toEqual([]);
  });

  it.each([1, 2])('has at most throttleLimit (%i) sessions open at once', async (throttleLimit) => {
    const hosts = await startAgents(3);
    const gate = join(await tempDir(), 'go');
    await writeFile(gate, '');
    const missing = join(await tempDir(), 'no-agent.sock');
    const { transport, counts } = countingTransport();
    // Five targets: every agent, one of them twice (a session each), and one that is not there.
    const targets = [...hosts.map((h) => h.door.socketPath), missing, hosts[0]!.door.socketPath];

    const results = await invokeMany(undefined, targets, gatedWork(gate), {
      disconnected: true,
      transport,
      throttleLimit,
    });

    expect(counts.connects).toBe(targets.length);
    expect(counts.max).toBe(throttleLimit);
    expect(counts.open).toBe(0);
    expect(results.map((r) => r.error?.code)).toEqual([
      undefined,
      undefined,
      undefined,
      'ERR_AGENT_UNREACHABLE',
      undefined,
    ]);
    expect((await sessionsOn(hosts[0]!)).map((info) => info.sessionId).sort()).toEqual(
      [started(results[0]!).sessionId, started(results[4]!).sessionId].sort(),
    );
  });
});
