import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type JobInfo, type JobRecord, RjobError } from '@rjob/core';
import type { EventMessage } from '@rjob/core/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readRecords } from '../fixtures/spool-records.js';
import { listenUnix, type UnixDoor } from '../doors/unix-door.js';
import { RecordSpool } from '../spool/record-spool.js';
import { JobStore } from '../store/job-store.js';
import {
  type Connector,
  eventRecords,
  killChildren,
  receivedRecords,
  TestClient,
  unixConnector,
} from '../fixtures/agent-test-client.js';
import { AgentServer } from './agent-server.js';
import type { AgentServerOptions } from './agent-server-options.js';

let dir: string;
let server: AgentServer;
let door: UnixDoor;
let connect: Connector;
const clients: TestClient[] = [];
const children: ChildProcess[] = [];
const CLIENT_PROCESS = fileURLToPath(new URL('../fixtures/client-process.ts', import.meta.url));

async function startAgentWith(options: Partial<AgentServerOptions> = {}): Promise<void> {
  server = new AgentServer({
    stateDir: dir,
    defaultCwd: dir,
    computerName: 'agent-under-test',
    authenticate: (token) => token ?? 'anonymous',
    ...options,
  });
  door = await listenUnix(server, { socketPath: join(dir, 'run', 'agent.sock') });
  connect = unixConnector(door.socketPath);
}

async function open(token?: string): Promise<TestClient> {
  const client = await TestClient.open(connect, token);
  clients.push(client);
  return client;
}

/** Collects a subscription's records until its `job.end`. */
function collect(client: TestClient, subscriptionId: string) {
  const records: JobRecord[] = [];
  let ended: (jobs: JobInfo[]) => void;
  const end = new Promise<JobInfo[]>((resolve) => (ended = resolve));
  client.onEvent((event: EventMessage) => {
    const data = event.data as { subscriptionId: string; jobs?: JobInfo[] };
    if (data?.subscriptionId !== subscriptionId) return;
    records.push(...(eventRecords(event, subscriptionId) ?? []));
    if (event.name === 'job.end') ended(data.jobs!);
  });
  return { records, end };
}

async function until(condition: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, 20));
}

function codeOf(promise: Promise<unknown>): Promise<string | undefined> {
  return promise.then(
    () => undefined,
    (error: unknown) => (RjobError.is(error) ? error.code : String(error)),
  );
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rjob-agent-'));
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.dispose();
  await killChildren(children);
  await door?.close();
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

describe.each([
  { records: 'spooled to disk', persist: true },
  { records: 'held in memory', persist: false },
])('AgentServer over a Unix socket, records $records', ({ persist }) => {
  const startAgent = (options: Partial<AgentServerOptions> = {}) => startAgentWith({ persist, ...options });

  it('keeps a job and its results remote: receive --keep twice returns the same data (S4)', async () => {
    await startAgent();
    const client = await open();
    const configured = await client.request('session.configure', { name: 's1', env: { GREETING: 'hi' } });
    expect(configured).toMatchObject({
      name: 's1',
      cwd: dir,
      computerName: 'agent-under-test',
      state: 'Opened',
    });

    const started = await client.request('job.start', {
      name: 'audit',
      definition: { command: 'echo "$GREETING"; pwd; echo done' },
    });
    expect(started).toMatchObject({ name: 'audit', type: 'BackgroundJob', location: 'localhost' });
    if (persist) {
      // The session and the job have their entries, and the job its spool, in the state directory.
      const jobsDir = join(dir, 'sessions', client.sessionId, 'jobs');
      expect(await readdir(join(jobsDir, started.instanceId))).toContain('spool');
    }
    const [waited] = await client.request('job.wait', { selector: 'audit' });
    expect(waited).toMatchObject({ state: 'Completed', hasMoreData: true });

    const first = receivedRecords(await client.request('job.receive', { selector: 'audit', keep: true }));
    const second = receivedRecords(await client.request('job.receive', { selector: 'audit', keep: true }));
    expect(first.map((r) => r.data)).toEqual(['hi', dir, 'done']);
    expect(second).toEqual(first);

    const taken = receivedRecords(await client.request('job.receive', { selector: started.id }));
    expect(taken).toEqual(first);
    expect(receivedRecords(await client.request('job.receive', { selector: 'audit' }))).toEqual([]);
    const [listed] = await client.request('job.get', { names: ['aud*'] });
    expect(listed).toMatchObject({ id: started.id, state: 'Completed', hasMoreData: false });

    expect(await client.request('job.remove', { selector: 'audit' })).toHaveLength(1);
    expect(await client.request('job.get', {})).toEqual([]);
  });

  it('streams invoke records, then job.end, then the response, and removes the temporary job', async () => {
    await startAgent();
    const client = await open();
    const { records, end } = collect(client, 'inv-1');
    const info = await client.request('invoke', {
      subscriptionId: 'inv-1',
      definition: { command: 'for i in 1 2 3; do echo "line $i"; done; echo oops >&2' },
    });
    expect(info.state).toBe('Completed');
    const endJobs = await end;
    expect(endJobs[0]?.state).toBe('Completed');
    expect(records.filter((r) => r.stream === 'output').map((r) => r.data)).toEqual([
      'line 1',
      'line 2',
      'line 3',
    ]);
    expect(records.filter((r) => r.stream === 'error').map((r) => r.data)).toEqual(['oops']);
    expect(await client.request('job.get', {})).toEqual([]);

    // Thread jobs run too.
    const thread = collect(client, 'inv-2');
    await client.request('invoke', {
      subscriptionId: 'inv-2',
      type: 'thread',
      definition: { eval: 'for (let i = 0; i < 3; i++) yield i * 2;' },
    });
    await thread.end;
    expect(thread.records.map((r) => r.data)).toEqual([0, 2, 4]);
  });

  it('answers bad requests with coded errors and keeps serving', async () => {
    await startAgent();
    const client = await open();
    expect(await codeOf(client.request('job.get', { ids: [42] }).then((jobs) => jobs[0]!.id))).toBeDefined();
    expect(await codeOf(client.request('job.receive', { selector: 42 }))).toBe('ERR_JOB_NOT_FOUND');
    expect(await codeOf(client.request('job.stop', { selector: 'nope' }))).toBe('ERR_JOB_NOT_FOUND');
    expect(await codeOf(client.request('no.such.method', {}))).toBe('ERR_UNKNOWN_METHOD');
    expect(await codeOf(client.request('job.start', { definition: 'rm -rf /' }))).toBe(
      'ERR_INVALID_ARGUMENT',
    );
    expect(await codeOf(client.request('job.receive', { selector: { $gt: 1 } }))).toBe(
      'ERR_INVALID_ARGUMENT',
    );
    expect(await codeOf(client.request('job.start', { type: 'nope', definition: {} }))).toBe(
      'ERR_UNKNOWN_JOB_TYPE',
    );
    expect(await codeOf(client.request('session.configure', { cwd: join(dir, 'missing') }))).toBe(
      'ERR_INVALID_ARGUMENT',
    );
    const failed = await client.request('job.start', { definition: { command: 'exit 3' } });
    await client.request('job.wait', { selector: failed.id });
    const records = receivedRecords(await client.request('job.receive', { selector: failed.id, keep: true }));
    expect(records.at(-1)).toMatchObject({ reason: true, data: { code: 'ERR_JOB_EXIT_CODE' } });
    expect(await client.request('session.info')).toMatchObject({
      state: 'Opened',
      availability: 'Available',
    });
  });

  it('refuses a resume without the secret or from another identity, and lists only own sessions', async () => {
    await startAgent();
    const alice = await open('alice');
    await alice.request('session.configure', { name: 'alice-s' });
    const mallory = await open('mallory');

    const probe = new TestClient(connect, 'mallory');
    clients.push(probe);
    const wrongSecret = { sessionId: alice.sessionId, resumeSecret: 'guess' };
    expect(await codeOf(probe.resume(wrongSecret))).toBe('ERR_SESSION_NOT_FOUND');
    expect(await codeOf(probe.resume({ sessionId: alice.sessionId, resumeSecret: alice.resumeSecret }))).toBe(
      'ERR_SESSION_NOT_FOUND',
    );
    expect(await codeOf(probe.resume({ sessionId: 'no-such-session', resumeSecret: 'x' }))).toBe(
      'ERR_SESSION_NOT_FOUND',
    );
    const sameIdentity = new TestClient(connect, 'alice');
    clients.push(sameIdentity);
    expect(await codeOf(sameIdentity.resume(wrongSecret))).toBe('ERR_SESSION_NOT_FOUND');

    const seenByMallory = await mallory.request('session.list');
    expect(seenByMallory.map((s) => s.sessionId)).toEqual([mallory.sessionId]);
    const seenByAlice = await alice.request('session.list');
    expect(seenByAlice.map((s) => s.name)).toEqual(['alice-s']);
    // Alice's session is untouched by the attempts.
    expect(await alice.request('session.info')).toMatchObject({ state: 'Opened' });
  });

  it('closes only the link that sends a malformed frame; other clients keep working', async () => {
    await startAgent();
    const good = await open();
    const job = await good.request('job.start', { definition: { command: 'echo still-here' } });

    // Before the handshake: a body that is not a message.
    const raw = createConnection(door.socketPath);
    const rawClosed = new Promise<void>((resolve) => raw.once('close', () => resolve()));
    raw.on('error', () => {});
    // Read what the agent answers (its error message), or the socket never sees the end.
    raw.resume();
    raw.write(Buffer.from([0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef]));
    await rawClosed;

    // After the handshake: garbage on an attached session closes that session's link.
    const bad = await open();
    const badClosed = new Promise<RjobError>((resolve) => bad.channel.onClose(resolve));
    bad.connection!.link.send(new Uint8Array([1, 2, 3]));
    expect((await badClosed).code).toBe('ERR_MESSAGE_INVALID');

    // A zero-length frame is malformed framing.
    const zero = createConnection(door.socketPath);
    const zeroClosed = new Promise<void>((resolve) => zero.once('close', () => resolve()));
    zero.on('error', () => {});
    zero.resume();
    zero.write(Buffer.from([0, 0, 0, 0]));
    await zeroClosed;

    // Only that link paid: the session itself waits, Disconnected, for a new client with its secret.
    await until(() => server.session(bad.sessionId)?.state === 'Disconnected');
    const takeover = new TestClient(connect);
    clients.push(takeover);
    await takeover.resume({ sessionId: bad.sessionId, resumeSecret: bad.resumeSecret });
    expect(await takeover.request('session.info')).toMatchObject({
      sessionId: bad.sessionId,
      state: 'Opened',
    });

    await good.request('job.wait', { selector: job.id });
    expect(
      receivedRecords(await good.request('job.receive', { selector: job.id })).map((r) => r.data),
    ).toEqual(['still-here']);
    const another = await open();
    expect(await another.request('session.info')).toMatchObject({ state: 'Opened' });
  });

  it('delivers 100,000 lines in job.packed batches exactly once, in order, while the link is cut 20 times', async () => {
    await startAgent();
    const client = await open();
    const total = 100_000;
    const cuts = 20;
    const lines: string[] = [];
    let events = 0;
    let ended!: () => void;
    const end = new Promise<void>((resolve) => (ended = resolve));
    let nextCutAt = Math.floor(total / (cuts + 1));
    let cutsDone = 0;
    let reconnecting: Promise<void> = Promise.resolve();
    client.onEvent((event) => {
      if (event.name === 'job.end') ended();
      // Records come in one form only: job.packed (job.end and job.state are the other events).
      expect(['job.packed', 'job.end', 'job.state']).toContain(event.name);
      const records = eventRecords(event, 'big');
      if (!records) return;
      events++;
      expect(records.length).toBeGreaterThan(0);
      for (const record of records) lines.push(record.data as string);
      if (lines.length >= nextCutAt && cutsDone < cuts) {
        cutsDone++;
        nextCutAt += Math.floor(total / (cuts + 1));
        client.cut();
        reconnecting = reconnecting.then(() => client.resume());
      }
    });
    const job = await client.request('job.start', { definition: { command: `seq 1 ${total}` } });
    await client.request('job.subscribe', { selector: job.id, subscriptionId: 'big' });
    await end;
    await reconnecting;
    expect(cutsDone).toBe(cuts);
    expect(lines.length).toBe(total);
    for (let i = 0; i < total; i++) {
      if (lines[i] !== String(i + 1)) expect(`line ${i}: ${lines[i]}`).toBe(`line ${i}: ${i + 1}`);
    }
    // The spooled agent batches what it reads at once; the memory source sends one record each.
    if (persist) expect(events).toBeLessThan(total);
    expect(receivedRecords(await client.request('job.receive', { selector: job.id }))).toEqual([]);
  });

  it('keeps a disconnected session running and delivers its output exactly once on connect (S5)', async () => {
    await startAgent();
    const client = await open();
    const marker = join(dir, 'finished');
    const job = await client.request('job.start', {
      definition: {
        command: `for i in $(seq 60); do echo "Output $i"; sleep 0.005; done; touch "${marker}"`,
      },
    });
    const { records, end } = collect(client, 'bg');
    await client.request('job.subscribe', { selector: job.id, subscriptionId: 'bg' });
    const disconnected = await client.request('session.disconnect');
    expect(disconnected.state).toBe('Disconnected');
    await until(() => server.session(client.sessionId)?.state === 'Disconnected');
    expect(server.sessions()[0]).toMatchObject({ state: 'Disconnected', availability: 'None' });

    // The job goes on without any client: it finishes and leaves its marker.
    await until(() =>
      stat(marker).then(
        () => true,
        () => false,
      ),
    );
    // Another client of the same identity finds it, then this one reconnects.
    const other = await open();
    const listed = await other.request('session.list');
    expect(listed.find((s) => s.sessionId === client.sessionId)?.state).toBe('Disconnected');

    await client.resume();
    await end;
    expect(records.map((r) => r.data)).toEqual(Array.from({ length: 60 }, (_, i) => `Output ${i + 1}`));
    expect(await client.request('session.info')).toMatchObject({ state: 'Opened' });
    expect(receivedRecords(await client.request('job.receive', { selector: job.id }))).toEqual([]);
  });

  it('lets a new client take over the session of a SIGKILLed client and receive everything once', async () => {
    await startAgent();
    const orphanClient = spawn(
      process.execPath,
      ['--conditions=@rjob/source', '--import', 'tsx', CLIENT_PROCESS, door.socketPath],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    children.push(orphanClient);
    const line = await new Promise<string>((resolve) =>
      orphanClient.stdout!.once('data', (d) => resolve(String(d))),
    );
    const { sessionId, resumeSecret, jobId } = JSON.parse(line) as {
      sessionId: string;
      resumeSecret: string;
      jobId: number;
    };
    orphanClient.kill('SIGKILL');
    await until(() => server.session(sessionId)?.state === 'Disconnected');

    // The same identity lists it, then takes it over with a fresh channel and the secret.
    const lister = await open();
    expect((await lister.request('session.list')).find((s) => s.sessionId === sessionId)?.state).toBe(
      'Disconnected',
    );
    const heir = new TestClient(connect);
    clients.push(heir);
    await heir.resume({ sessionId, resumeSecret });
    await heir.request('job.wait', { selector: jobId });
    const records = receivedRecords(await heir.request('job.receive', { selector: 'orphaned' }));
    const expected = [...Array.from({ length: 500 }, (_, i) => `line ${i + 1}`), 'last'];
    expect(records.map((r) => r.data)).toEqual(expected);
    expect(receivedRecords(await heir.request('job.receive', { selector: 'orphaned' }))).toEqual([]);
  });

  if (persist)
    it('hands a subscription over to the client that takes a hung session over', async () => {
      await startAgent();
      const total = 20_000;
      const first = await open();
      const job = await first.request('job.start', {
        name: 'long',
        definition: { command: `seq 1 ${total}` },
      });
      const seen: string[] = [];
      first.onEvent((event) => {
        for (const record of eventRecords(event, 'a') ?? []) seen.push(record.data as string);
        // Hang mid-stream: what follows is neither consumed nor acknowledged.
        if (seen.length >= 3_000) first.stalled = true;
      });
      await first.request('job.subscribe', { selector: job.id, subscriptionId: 'a' });
      await until(() => first.stalled);
      first.cut();

      const heir = new TestClient(connect);
      clients.push(heir);
      await heir.resume({ sessionId: first.sessionId, resumeSecret: first.resumeSecret });
      const { records, end } = collect(heir, 'b');
      await heir.request('job.subscribe', { selector: 'long', subscriptionId: 'b' });
      await end;
      const lines = records.map((r) => Number(r.data));
      // Nothing lost: the heir starts at or before the first line the hung client never consumed,
      // and from there has every line once, in order.
      expect(lines[0]).toBeLessThanOrEqual(seen.length + 1);
      expect(lines).toEqual(Array.from({ length: total - lines[0]! + 1 }, (_, i) => lines[0]! + i));
    });

  if (persist)
    it('hands a batched subscription over at the first batch the hung client did not acknowledge', async () => {
      await startAgent();
      const total = 20_000;
      const first = await open();
      const job = await first.request('job.start', {
        name: 'long',
        definition: { command: `seq 1 ${total}` },
      });
      await first.request('job.wait', { selector: job.id });
      const seen: number[] = [];
      first.onEvent((event) => {
        const records = eventRecords(event, 'a');
        if (!records) return;
        for (const record of records) seen.push(Number(record.data));
        // Hang after the first batch: what follows is neither consumed nor acknowledged.
        first.stalled = true;
      });
      await first.request('job.subscribe', { selector: job.id, subscriptionId: 'a' });
      await until(() => first.stalled);
      first.cut();

      const heir = new TestClient(connect);
      clients.push(heir);
      await heir.resume({ sessionId: first.sessionId, resumeSecret: first.resumeSecret });
      const { records, end } = collect(heir, 'b');
      await heir.request('job.subscribe', { selector: 'long', subscriptionId: 'b' });
      await end;
      const lines = records.map((r) => Number(r.data));
      expect(seen.length).toBeGreaterThan(0);
      // At or before the first line after the batch the hung client took; every line from there once.
      expect(lines[0]).toBeLessThanOrEqual(seen.length + 1);
      expect(lines).toEqual(Array.from({ length: total - lines[0]! + 1 }, (_, i) => lines[0]! + i));
    });

  if (persist)
    it('leaves sessions, finished jobs and unreceived records on disk when it shuts down', async () => {
      await startAgent();
      const client = await open();
      const done = await client.request('job.start', {
        name: 'done',
        definition: { command: 'echo x; echo y' },
      });
      await client.request('job.wait', { selector: done.id });
      const running = await client.request('job.start', {
        name: 'running',
        definition: { command: 'sleep 30' },
      });
      await door.close();
      await server.close();

      const snapshot = await (await JobStore.open({ dir })).load();
      expect(snapshot.sessions.map((session) => session.sessionId)).toEqual([client.sessionId]);
      const stored = snapshot.jobs.find((job) => job.instanceId === done.instanceId)!;
      expect(stored.state).toBe('Completed');
      // Stopping the agent stops its jobs; they are not left as phantom Running ones.
      expect(snapshot.jobs.find((job) => job.instanceId === running.instanceId)?.state).toBe('Stopped');
      const spool = await RecordSpool.open({ dir: stored.spoolDir! });
      try {
        expect((await readRecords(spool, 1)).map((record) => record.data)).toEqual(['x', 'y']);
      } finally {
        await spool.close();
      }
    });

  if (persist)
    it('bounds the spool with the drop policy: a gap record counts what was lost', async () => {
      await startAgent({ spool: { maxBytes: 64 * 1024, policy: 'drop' } });
      const client = await open();
      const job = await client.request('job.start', { definition: { command: 'seq 1 20000' } });
      await client.request('job.wait', { selector: job.id });
      const records = receivedRecords(await client.request('job.receive', { selector: job.id }));
      const gap = records[0] as JobRecord & { gap?: { droppedRecords: number; toSeq: number } };
      expect(gap.gap?.droppedRecords).toBeGreaterThan(0);
      const tail = records.slice(1).map((r) => Number(r.data));
      expect(tail[0]).toBe(gap.gap!.toSeq + 1);
      expect(tail.at(-1)).toBe(20000);
      expect(tail).toEqual(Array.from({ length: tail.length }, (_, i) => tail[0]! + i));
      expect(receivedRecords(await client.request('job.receive', { selector: job.id }))).toEqual([]);
    });

  it('expires an idle disconnected session and stops its jobs', async () => {
    await startAgent({ idleTimeoutMs: 50 });
    const client = await open();
    const job = await client.request('job.start', { definition: { command: 'sleep 30' } });
    const session = server.session(client.sessionId)!;
    client.cut();
    await until(() => server.session(client.sessionId) === undefined);
    await until(() => session.jobs.job(job.id).finished);
    expect(session.jobs.job(job.id).state).toBe('Stopped');
    expect(await codeOf(client.resume())).toBe('ERR_SESSION_NOT_FOUND');
  });

  it('session.close stops the jobs and ends the session for good', async () => {
    await startAgent();
    const client = await open();
    const job = await client.request('job.start', { definition: { command: 'sleep 30' } });
    const session = server.session(client.sessionId)!;
    await client.request('session.close');
    expect(session.jobs.job(job.id).state).toBe('Stopped');
    await until(() => client.channel.state === 'closed');
    expect(server.sessions()).toEqual([]);
    const again = new TestClient(connect);
    clients.push(again);
    expect(
      await codeOf(again.resume({ sessionId: client.sessionId, resumeSecret: client.resumeSecret })),
    ).toBe('ERR_SESSION_NOT_FOUND');
  });
});
