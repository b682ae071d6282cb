// Core's session client (openSession, connectSession, RemoteJob) against the real agent, over
// core's in-memory network: requests, invoke, reconnects, takeover and flow control.
import {
  connectSession,
  JobManager,
  openSession,
  type RemoteRecord,
  RjobError,
  remoteJobType,
  type Session,
  type SessionState,
} from '@rjob/core';
import { createMemoryNetwork, type MemoryNetwork } from '@rjob/core/testing';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { AgentHost, closeAgentHosts, quiet } from '../fixtures/agent-host.js';
import { scripted } from '../fixtures/scripted-job-type.js';
import { until } from '../fixtures/until.js';

async function setup(
  address = 'server01',
  options: Parameters<typeof AgentHost.start>[2] = {},
): Promise<{ network: MemoryNetwork; agent: AgentHost }> {
  const network = createMemoryNetwork();
  const agent = await AgentHost.start(network, address, options);
  return { network, agent };
}

function states(session: Session<unknown>): SessionState[] {
  const seen: SessionState[] = [];
  session.onStateChange(({ state }) => seen.push(state));
  return seen;
}

afterEach(async () => {
  vi.useRealTimers();
  await closeAgentHosts();
});

/**
 * A first client whose RemoteJob holds (and has acknowledged) the first 50 of 100 records; the
 * rest wait for the gate `phase2`. The agent consumes records on the client's job.ack (job 1: the
 * session's first), so both sides agree on the first half before the client dies.
 */
async function firstClientWithHalf() {
  const { network, agent } = await setup();
  const first = await openSession(network.transport, 'server01', { channel: quiet, autoReconnect: false });
  const firstManager = new JobManager();
  const firstJob = await firstManager.start(remoteJobType(), {
    session: first,
    work: { ...scripted({ lines: 50, more: { lines: 50, gate: 'phase2' } }), name: 'bg' },
  });
  await until(() => firstJob.buffer.length === 50);
  const remote = agent.server.session(first.sessionId!)!;
  await until(() => agent.tap.ackedSeq(1) === 50 && remote.channel.ackedSeq === remote.channel.sentSeq);
  return { network, agent, first, firstManager, firstJob };
}

describe('Session: requests', () => {
  it('opens, answers requests and revives coded errors', async () => {
    const { network } = await setup();
    const session = await openSession(network.transport, 'server01', { channel: quiet, name: 's1' });
    expect(session.state).toBe('Opened');
    expect(session.availability).toBe('Available');
    expect(session.name).toBe('s1');
    expect(session.computerName).toBe('server01');
    expect(session.sessionId).toEqual(expect.any(String));
    expect(session.resumeSecret).toEqual(expect.any(String));

    const info = await session.request('session.info');
    expect(info.sessionId).toBe(session.sessionId);

    const error = await session.jobs.receive(42).catch((e: unknown) => e);
    expect(RjobError.is(error)).toBe(true);
    expect(error).toMatchObject({ code: 'ERR_JOB_NOT_FOUND' });
    await session.close();
    expect(session.state).toBe('Closed');
    await expect(session.request('session.info')).rejects.toMatchObject({ code: 'ERR_SESSION_CLOSED' });
  });

  it('keeps jobs and their results on the agent (S4)', async () => {
    const { network } = await setup();
    const session = await openSession(network.transport, 'server01', { channel: quiet });
    const job = await session.jobs.start(scripted({ lines: 3 }), { name: 'audit' });
    expect(job).toMatchObject({ name: 'audit', computerName: 'server01' });
    await session.jobs.wait('audit');
    const first = await session.jobs.receive('audit', { keep: true });
    const second = await session.jobs.receive('audit', { keep: true });
    expect(first.map((r) => r.data)).toEqual([0, 1, 2]);
    expect(second.map((r) => r.data)).toEqual([0, 1, 2]);
    expect(first.every((r) => r.computerName === 'server01')).toBe(true);
    await session.close();
  });

  it('an unreachable target is a coded connect failure', async () => {
    const { network } = await setup();
    await expect(openSession(network.transport, 'nowhere', { channel: quiet })).rejects.toMatchObject({
      code: 'ERR_CONNECT_FAILED',
    });
  });
});

describe('Session: invoke', () => {
  it('streams records tagged with the computer name, then the final info', async () => {
    const { network } = await setup();
    const session = await openSession(network.transport, 'server01', { channel: quiet });
    const invocation = session.invoke(scripted({ lines: 5 }));
    const records: RemoteRecord[] = [];
    for await (const record of invocation) records.push(record);
    expect(records.map((r) => r.data)).toEqual([0, 1, 2, 3, 4]);
    expect(records.every((r) => r.computerName === 'server01')).toBe(true);
    const info = await invocation.result;
    expect(info).toMatchObject({ state: 'Completed', computerName: 'server01' });
    await session.close();
  });

  it('a failed invocation ends with the revived reason', async () => {
    const { network } = await setup();
    const session = await openSession(network.transport, 'server01', { channel: quiet });
    const seen: RemoteRecord[] = [];
    const invocation = session.invoke(scripted({ lines: 2, fail: 'ERR_JOB_EXIT_CODE' }), {
      onRecord: (record) => {
        seen.push(record);
      },
    });
    const info = await invocation.result;
    expect(seen.filter((r) => !r.reason).map((r) => r.data)).toEqual([0, 1]);
    // The agent also delivers the reason, as the job's last record.
    expect(seen.slice(2)).toMatchObject([
      { stream: 'error', reason: true, data: { code: 'ERR_JOB_EXIT_CODE' } },
    ]);
    expect(info.state).toBe('Failed');
    expect(RjobError.hasCode(info.reason, 'ERR_JOB_EXIT_CODE')).toBe(true);
    await session.close();
  });
});

describe('Session: disconnect and reconnect', () => {
  it('a cut link goes Disconnected, then Opened again by itself', async () => {
    const { network } = await setup();
    const session = await openSession(network.transport, 'server01', { channel: quiet, initialBackoffMs: 1 });
    const seen = states(session);
    network.links.at(-1)!.cut();
    await until(() => seen.length >= 2);
    expect(seen).toEqual(['Disconnected', 'Opened']);
    expect(session.state).toBe('Opened');
    // Requests still work on the resumed session.
    await expect(session.request('session.info')).resolves.toMatchObject({ sessionId: session.sessionId });
    await session.close();
  });

  it('after the reconnect window it stays Disconnected, and a later connect() resumes', async () => {
    const { network, agent } = await setup();
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const session = await openSession(network.transport, 'server01', {
      channel: quiet,
      reconnectWindowMs: 60_000,
      initialBackoffMs: 1_000,
      maxBackoffMs: 8_000,
    });
    const seen = states(session);
    agent.stopListening(); // the agent is unreachable now
    network.links.at(-1)!.cut();
    await until(() => session.state === 'Disconnected' && session.reconnecting);
    await vi.advanceTimersByTimeAsync(30_000);
    expect(session.reconnecting).toBe(true);
    await vi.advanceTimersByTimeAsync(40_000);
    await until(() => !session.reconnecting);
    expect(session.state).toBe('Disconnected');
    expect(session.reason).toMatchObject({ code: 'ERR_CONNECT_FAILED' });
    vi.useRealTimers();

    agent.listen();
    await session.connect();
    expect(session.state).toBe('Opened');
    expect(seen[0]).toBe('Disconnected');
    expect(seen.at(-1)).toBe('Opened');
    await session.close();
  });

  it('a silent link is dropped by the heartbeat: Disconnected (not Broken), then resumed', async () => {
    const { network } = await setup();
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
    const session = await openSession(network.transport, 'server01', {
      channel: { pingIntervalMs: 1_000, heartbeatTimeoutMs: 3_000 },
    });
    const seen = states(session);
    network.links.at(-1)!.stall();
    await vi.advanceTimersByTimeAsync(5_000);
    await until(() => seen.length >= 2);
    expect(seen).toEqual(['Disconnected', 'Opened']);
    expect(network.links.length).toBe(2);
    vi.useRealTimers();
    await expect(session.request('session.info')).resolves.toMatchObject({ sessionId: session.sessionId });
    await session.close();
  });

  it('connect() during an automatic attempt still ends Opened', async () => {
    const { network } = await setup();
    const session = await openSession(network.transport, 'server01', { channel: quiet, initialBackoffMs: 1 });
    network.links.at(-1)!.cut();
    await session.connect();
    expect(session.state).toBe('Opened');
    await session.close();
  });

  it('a refused resume makes the session Broken', async () => {
    // The agent forgets the session as it does every idle one: it expires while no link is up.
    const { network, agent } = await setup('server01', { idleTimeoutMs: 20 });
    const session = await openSession(network.transport, 'server01', {
      channel: quiet,
      initialBackoffMs: 1,
      maxBackoffMs: 20,
    });
    const seen = states(session);
    agent.stopListening();
    network.links.at(-1)!.cut();
    await until(() => agent.server.session(session.sessionId!) === undefined);
    agent.listen();
    await until(() => session.state === 'Broken');
    expect(seen).toEqual(['Disconnected', 'Broken']);
    expect(session.reason).toMatchObject({ code: 'ERR_SESSION_NOT_FOUND' });
    await expect(session.request('session.info')).rejects.toMatchObject({ code: 'ERR_SESSION_BROKEN' });
  });

  it('disconnect() leaves the session Disconnected, without reconnecting, until connect()', async () => {
    const { network, agent } = await setup();
    const session = await openSession(network.transport, 'server01', { channel: quiet });
    await session.disconnect();
    expect(session.state).toBe('Disconnected');
    expect(session.reconnecting).toBe(false);
    expect(agent.server.session(session.sessionId!)?.state).toBe('Disconnected');
    await session.connect();
    expect(session.state).toBe('Opened');
    await session.close();
  });
});

describe('RemoteJob', () => {
  it('receives 100,000 records exactly once, in order, through 20 link cuts, and ends Completed', async () => {
    const total = 100_000;
    const cuts = 20;
    const { network, agent } = await setup();
    const session = await openSession(network.transport, 'server01', {
      channel: { ...quiet, windowMessages: 512 },
      initialBackoffMs: 1,
    });
    const manager = new JobManager();
    // The agent sends records in batches of thousands (about 25 for 100,000). Of every three cuts,
    // two come right after the client resumed on a link, one after the first batch a link carried,
    // until there were `cuts` cuts; each resume moves the stream on by what the client had received.
    let done = 0;
    const ready = new Set<unknown>();
    const cut = (link: (typeof network.links)[number]): void =>
      queueMicrotask(() => {
        if (link.closed || done >= cuts) return;
        done++;
        link.cut();
      });
    session.onStateChange(({ state }) => {
      if (state !== 'Opened') return;
      const link = network.links.at(-1)!;
      if (done % 3 !== 0) cut(link);
      else ready.add(link);
    });
    ready.add(network.links.at(-1));
    agent.tap.onRecordSent = () => {
      const link = network.links.at(-1)!;
      if (!ready.delete(link)) return;
      // After the send returns: the agent's channel is still inside it.
      cut(link);
    };
    const disconnectedSeen: string[] = [];
    const job = await manager.start(remoteJobType(), { session, work: scripted({ lines: total }) });
    job.onStateChange(({ state }) => disconnectedSeen.push(state));
    const records = await manager.receive(job, { wait: true });
    expect(done).toBe(cuts);
    expect(job.state).toBe('Completed');
    expect(job.type).toBe('RemoteJob');
    expect(records.length).toBe(total);
    for (let i = 0; i < total; i++) {
      if (records[i]!.data !== i) throw new Error(`record ${i} is ${String(records[i]!.data)}`);
    }
    expect(disconnectedSeen).toContain('Disconnected');
    await session.close();
  });

  it('shows Disconnected while the session is, and Running again after connect()', async () => {
    const { network, agent } = await setup();
    const session = await openSession(network.transport, 'server01', { channel: quiet });
    const manager = new JobManager();
    const job = await manager.start(remoteJobType(), {
      session,
      work: scripted({ lines: 3, gate: 'g1' }),
    });
    expect(job.state).toBe('Running');
    await session.disconnect();
    expect(job.state).toBe('Disconnected');
    agent.gates.open('g1');
    await session.connect();
    expect(['Running', 'Completed']).toContain(job.state);
    const records = await manager.receive(job, { wait: true });
    expect(records.map((r) => r.data)).toEqual([0, 1, 2]);
    expect(job.state).toBe('Completed');
    await session.close();
  });

  it('a remote failure fails the local job with the revived, coded reason', async () => {
    const { network } = await setup();
    const session = await openSession(network.transport, 'server01', { channel: quiet });
    const manager = new JobManager();
    const job = await manager.start(remoteJobType(), {
      session,
      work: scripted({ fail: 'ERR_JOB_EXIT_CODE' }),
    });
    await manager.wait(job);
    expect(job.state).toBe('Failed');
    expect(job.reason?.code).toBe('ERR_JOB_EXIT_CODE');
    await session.close();
  });

  it('stop() stops the remote job', async () => {
    const { network, agent } = await setup();
    const session = await openSession(network.transport, 'server01', { channel: quiet });
    const manager = new JobManager();
    const job = await manager.start(remoteJobType(), {
      session,
      work: scripted({ lines: 1, gate: 'never' }),
    });
    await manager.stop(job);
    expect(job.state).toBe('Stopped');
    expect(agent.tap.calls('job.stop')).toBe(1);
    await session.close();
  });
});

describe('Receive-PSSession and another client (S5)', () => {
  it('receive({ outTarget: "job" }) turns running remote jobs into local RemoteJobs', async () => {
    const { network, agent } = await setup();
    const session = await openSession(network.transport, 'server01', { channel: quiet });
    await session.jobs.start(scripted({ lines: 60, gate: 'bg' }), { name: 'bg-job' });
    await session.disconnect();
    agent.gates.open('bg');
    await session.connect();
    const manager = new JobManager();
    const [job] = await session.receive({ outTarget: 'job', jobManager: manager });
    expect(job).toMatchObject({ name: 'bg-job', type: 'RemoteJob', location: 'server01' });
    const records = await manager.receive(job!, { wait: true });
    expect(records.map((r) => r.data)).toEqual(Array.from({ length: 60 }, (_, i) => i));
    expect(job!.state).toBe('Completed');
    await session.close();
  });

  it('connectSession from a second client object with the saved id and secret receives the rest', async () => {
    const { network, agent, first, firstManager, firstJob } = await firstClientWithHalf();
    const saved = { sessionId: first.sessionId!, resumeSecret: first.resumeSecret! };
    network.links.at(-1)!.cut();
    agent.gates.open('phase2');

    const second = await connectSession(network.transport, 'server01', { ...saved, channel: quiet });
    expect(second.state).toBe('Opened');
    expect(second.sessionId).toBe(saved.sessionId);
    expect(second.id).not.toBe(first.id);
    const manager = new JobManager();
    const [job] = await second.receive({ outTarget: 'job', jobManager: manager });
    const rest = await manager.receive(job!, { wait: true });
    const firstHalf = await firstManager.receive(firstJob);
    expect([...firstHalf, ...rest].map((r) => r.data)).toEqual(Array.from({ length: 100 }, (_, i) => i));
    expect(job!.state).toBe('Completed');
    await second.close();
  });

  it('connectSession takes over records the dead client never acknowledged, each delivered once', async () => {
    const { network, agent, first, firstManager, firstJob } = await firstClientWithHalf();
    // The second half goes out on a link that delivers nothing, then the client dies: sent by
    // the agent, never acknowledged.
    const link = network.links.at(-1)!;
    link.stall();
    agent.gates.open('phase2');
    await until(() => agent.tap.recordsSent === 100);
    link.cut();

    const second = await connectSession(network.transport, 'server01', {
      sessionId: first.sessionId!,
      resumeSecret: first.resumeSecret!,
      channel: quiet,
    });
    expect(agent.server.session(first.sessionId!)!.channel.epoch).toBe(1);
    const manager = new JobManager();
    const [job] = await second.receive({ outTarget: 'job', jobManager: manager });
    const rest = await manager.receive(job!, { wait: true });
    expect(rest.map((r) => r.data)).toEqual(Array.from({ length: 50 }, (_, i) => 50 + i));
    expect((await firstManager.receive(firstJob)).map((r) => r.data)).toEqual(
      Array.from({ length: 50 }, (_, i) => i),
    );
    await second.close();
  });

  it('connectSession while the first client is still attached breaks it with ERR_SESSION_TAKEN_OVER', async () => {
    const { network } = await setup();
    const first = await openSession(network.transport, 'server01', { channel: quiet });
    const seen = states(first);
    const second = await connectSession(network.transport, 'server01', {
      sessionId: first.sessionId!,
      resumeSecret: first.resumeSecret!,
      channel: quiet,
    });
    await until(() => first.state === 'Broken');
    expect(seen).toEqual(['Broken']);
    expect(first.reason?.code).toBe('ERR_SESSION_TAKEN_OVER');
    await expect(first.request('session.info')).rejects.toMatchObject({ code: 'ERR_SESSION_BROKEN' });
    expect((await second.info()).sessionId).toBe(first.sessionId);
    await second.close();
  });

  it('connectSession with a wrong secret is refused with ERR_SESSION_NOT_FOUND', async () => {
    const { network } = await setup();
    const first = await openSession(network.transport, 'server01', { channel: quiet });
    await expect(
      connectSession(network.transport, 'server01', {
        sessionId: first.sessionId!,
        resumeSecret: 'guess',
        channel: quiet,
      }),
    ).rejects.toMatchObject({ code: 'ERR_SESSION_NOT_FOUND' });
    await first.close();
  });
});

describe('flow control and receive to the host', () => {
  it('a RemoteJob paused by a full buffer stops the agent through credit, and loses nothing', async () => {
    const total = 30_000;
    const { network, agent } = await setup();
    const session = await openSession(network.transport, 'server01', {
      // Few messages in flight: the agent batches records, up to thousands in one event.
      channel: { ...quiet, windowMessages: 4 },
    });
    const manager = new JobManager({ maxBufferedBytes: 4096 });
    const job = await manager.start(remoteJobType(), { session, work: scripted({ lines: total }) });
    // Nobody receives: the local buffer fills, the job pauses, the agent runs out of credit. The
    // agent's records pass through its spool on disk: wait until sending started, then stopped.
    await until(() => agent.tap.recordsSent > 0);
    for (let last = -1; agent.tap.recordsSent !== last; ) {
      last = agent.tap.recordsSent;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    expect(agent.tap.recordsSent).toBeGreaterThan(0);
    expect(agent.tap.recordsSent).toBeLessThan(total);
    expect(job.buffer.length).toBeLessThan(1_000);
    const records = await manager.receive(job, { wait: true });
    expect(records.map((r) => r.data)).toEqual(Array.from({ length: total }, (_, i) => i));
    expect(job.state).toBe('Completed');
    await session.close();
  });

  it('receive() without outTarget returns what the remote jobs hold, tagged', async () => {
    const { network } = await setup();
    const session = await openSession(network.transport, 'server01', { channel: quiet });
    await session.jobs.start(scripted({ lines: 2 }), { name: 'a' });
    await session.jobs.wait('a');
    const records = await session.receive();
    expect(records.map((r) => [r.data, r.computerName])).toEqual([
      [0, 'server01'],
      [1, 'server01'],
    ]);
    expect(await session.receive()).toEqual([]);
    await session.close();
  });

  it('receive({ outTarget: "job" }) leaves jobs this client already mirrors alone', async () => {
    const { network, agent } = await setup();
    const session = await openSession(network.transport, 'server01', { channel: quiet });
    const manager = new JobManager();
    const job = await manager.start(remoteJobType(), {
      session,
      work: scripted({ lines: 2, gate: 'x' }),
    });
    expect(await session.receive({ outTarget: 'job', jobManager: manager })).toEqual([]);
    agent.gates.open('x');
    expect((await manager.receive(job, { wait: true })).map((r) => r.data)).toEqual([0, 1]);
    await session.close();
  });
});
