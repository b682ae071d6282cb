import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  defineTransport,
  type JobInfo,
  type JobRecord,
  openSession,
  type RemoteRecord,
  type Session,
  type TransportChannel,
  unixSocketTransport,
} from '@rjob/core';
import { decodeMessage, type EventMessage } from '@rjob/core/protocol';
import { decodeRecordEntries } from '@rjob/core/codec';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { listenUnix, type UnixDoor } from '../doors/unix-door.js';
import { receivedRecords, TestClient, unixConnector } from '../fixtures/agent-test-client.js';
import { AgentServer } from './agent-server.js';
import type { AgentServerOptions } from './agent-server-options.js';

let dir: string;
let server: AgentServer | undefined;
let door: UnixDoor | undefined;
const clients: TestClient[] = [];
const sessions: Session<unknown>[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rjob-packed-'));
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.dispose();
  for (const session of sessions.splice(0)) await session.close().catch(() => {});
  await door?.close();
  await server?.close();
  door = undefined;
  server = undefined;
  await rm(dir, { recursive: true, force: true });
});

async function startAgent(options: Partial<AgentServerOptions> = {}): Promise<void> {
  server = new AgentServer({ stateDir: dir, defaultCwd: dir, computerName: 'packed-host', ...options });
  door = await listenUnix(server, { socketPath: join(dir, 'agent.sock') });
}

/** The event names the client side of a link received, decoded from its frames. */
function spyingTransport(names: string[]) {
  return defineTransport<string>({
    name: 'spy',
    async connect(target, options) {
      const link = await unixSocketTransport.connect(target, options);
      const spied: TransportChannel = {
        send: (frame) => link.send(frame),
        onMessage: (handler) =>
          link.onMessage((frame) => {
            try {
              const message = decodeMessage(frame);
              if (message.type === 'event') names.push(message.name);
            } catch {
              // Not ours to judge: the channel sees the same frame.
            }
            handler(frame);
          }),
        close: (reason) => link.close(reason),
        onClose: (handler) => link.onClose(handler),
        ...(link.onDrain ? { onDrain: (handler: () => void) => link.onDrain!(handler) } : {}),
        ...(link.maxFrameBytes === undefined ? {} : { maxFrameBytes: link.maxFrameBytes }),
      };
      return spied;
    },
  });
}

async function openClient(): Promise<TestClient> {
  const client = await TestClient.open(unixConnector(door!.socketPath));
  clients.push(client);
  return client;
}

const LINES = 2_000;
/** Interleaved stdout and stderr lines, with multi-byte characters and an empty line now and then. */
const MIXED_COMMAND = `i=1; while [ $i -le ${LINES} ]; do echo "out $i grüße ✓ 😀"; echo "err $i ✗ ünï" >&2; if [ $((i % 500)) -eq 0 ]; then echo ""; fi; i=$((i+1)); done`;
const expectedOut = (): string[] => {
  const out: string[] = [];
  for (let i = 1; i <= LINES; i++) {
    out.push(`out ${i} grüße ✓ 😀`);
    if (i % 500 === 0) out.push('');
  }
  return out;
};
const expectedErr = (): string[] => Array.from({ length: LINES }, (_, k) => `err ${k + 1} ✗ ünï`);

function checkMixed(records: Array<JobRecord | RemoteRecord>): void {
  expect(records.map((r) => r.seq)).toEqual(Array.from({ length: records.length }, (_, k) => k + 1));
  expect(records.filter((r) => r.stream === 'output').map((r) => r.data)).toEqual(expectedOut());
  expect(records.filter((r) => r.stream === 'error').map((r) => r.data)).toEqual(expectedErr());
  expect(records).toHaveLength(expectedOut().length + LINES);
}

/** Collects one subscription's events from a raw client until `job.end`. */
function collect(client: TestClient, subscriptionId: string) {
  const events: Record<string, number> = {};
  const records: JobRecord[] = [];
  let ended!: (jobs: JobInfo[]) => void;
  const end = new Promise<JobInfo[]>((resolve) => (ended = resolve));
  client.onEvent((event: EventMessage) => {
    const data = event.data as { subscriptionId?: string; entries?: Uint8Array; jobs?: JobInfo[] };
    if (data?.subscriptionId !== subscriptionId) return;
    events[event.name] = (events[event.name] ?? 0) + 1;
    if (event.name === 'job.packed') {
      expect(data.entries).toBeInstanceOf(Uint8Array);
      const decoded = decodeRecordEntries(data.entries!);
      expect(decoded.length).toBeGreaterThan(0);
      records.push(...decoded);
    }
    if (event.name === 'job.end') ended(data.jobs!);
  });
  return { events, records, end };
}

describe('packed records over a real agent (spooled jobs)', () => {
  it('a session invoke delivers every record exactly once, in order, with the fields of a receive', async () => {
    await startAgent();
    const names: string[] = [];
    const session = await openSession(spyingTransport(names), door!.socketPath);
    sessions.push(session);

    const invocation = session.invoke({ definition: { command: MIXED_COMMAND } });
    const invoked: RemoteRecord[] = [];
    for await (const each of invocation) invoked.push(each);
    const info = await invocation.result;
    expect(info.state).toBe('Completed');
    checkMixed(invoked);
    // They came packed: job.packed is the only record event the agent sent.
    expect(names).toContain('job.packed');
    expect(
      names.filter((name) => name !== 'job.packed' && name !== 'job.end' && name !== 'job.state'),
    ).toEqual([]);
    for (const each of invoked) {
      expect(each).toMatchObject({
        computerName: session.computerName,
        jobId: info.id,
        location: info.location,
      });
      expect(Number.isFinite(each.timeMs)).toBe(true);
    }

    // The same command as a job, received the ordinary way: the same records and fields.
    const job = await session.jobs.start({ definition: { command: MIXED_COMMAND } }, { name: 'again' });
    await session.jobs.wait('again');
    const received = await session.jobs.receive('again');
    checkMixed(received);
    expect(Object.keys(invoked[0]!).sort()).toEqual(Object.keys(received[0]!).sort());
    const shape = (r: RemoteRecord) => ({ stream: r.stream, data: r.data, location: r.location });
    expect(invoked.filter((r) => r.stream === 'output').map(shape)).toEqual(
      received.filter((r) => r.stream === 'output').map(shape),
    );
    expect(received.every((r) => r.jobId === job.id)).toBe(true);
  });

  it('session.subscribe (as a RemoteJob uses it) gets the records packed, exactly once', async () => {
    await startAgent();
    const names: string[] = [];
    const session = await openSession(spyingTransport(names), door!.socketPath);
    sessions.push(session);
    await session.jobs.start({ definition: { command: MIXED_COMMAND } }, { name: 'sub' });
    await session.jobs.wait('sub');
    const got: RemoteRecord[] = [];
    await new Promise<void>((resolve) => {
      session.subscribe('sub', { onRecord: (r) => void got.push(r), onEnd: () => resolve() });
    });
    checkMixed(got);
    expect(names).toContain('job.packed');
    // Consumed on the agent.
    expect(await session.jobs.receive('sub')).toEqual([]);
  });

  it('a raw client gets job.packed events only; the batch and packed flags of old drafts change nothing', async () => {
    await startAgent();
    const client = await openClient();
    const started = await client.request('job.start', {
      name: 'mixed',
      definition: { command: MIXED_COMMAND },
    });
    await client.request('job.wait', { selector: 'mixed' });

    const packed = collect(client, 'packed');
    await client.request('job.subscribe', { selector: 'mixed', subscriptionId: 'packed', keep: true });
    await packed.end;
    expect(packed.events['job.packed']).toBeGreaterThan(0);
    expect(Object.keys(packed.events).sort()).toEqual(['job.end', 'job.packed']);
    checkMixed(packed.records);
    expect(packed.records.every((r) => r.jobId === started.id)).toBe(true);

    // Unknown fields are ignored (protocol §3): the flags that once chose a form choose nothing.
    const flagged = collect(client, 'flagged');
    await client.request('job.subscribe', {
      selector: 'mixed',
      subscriptionId: 'flagged',
      batch: false,
      packed: false,
      keep: true,
    } as never);
    await flagged.end;
    expect(Object.keys(flagged.events).sort()).toEqual(['job.end', 'job.packed']);
    expect(flagged.records).toEqual(packed.records);
  });

  it('a raw invoke streams job.packed events, then job.end, then the response', async () => {
    await startAgent();
    const client = await openClient();
    const order: string[] = [];
    const { events, records, end } = collect(client, 'inv');
    client.onEvent((event) => {
      if ((event.data as { subscriptionId?: string })?.subscriptionId === 'inv') order.push(event.name);
    });
    const info = await client.request('invoke', {
      subscriptionId: 'inv',
      definition: { command: MIXED_COMMAND },
    });
    order.push('response');
    await end;
    expect(info.state).toBe('Completed');
    expect(events['job.packed']).toBeGreaterThan(0);
    checkMixed(records);
    expect(order.at(-1)).toBe('response');
    expect(order.at(-2)).toBe('job.end');
    // The temporary job is gone.
    expect(await client.request('job.get', {})).toEqual([]);
  });

  it('consumes packed records: a later receive of the job gets nothing', async () => {
    await startAgent();
    const client = await openClient();
    await client.request('job.start', {
      name: 'once',
      definition: { command: 'for i in 1 2 3; do echo "l$i"; done' },
    });
    await client.request('job.wait', { selector: 'once' });
    const sub = collect(client, 'take');
    await client.request('job.subscribe', { selector: 'once', subscriptionId: 'take' });
    await sub.end;
    expect(sub.records.map((r) => r.data)).toEqual(['l1', 'l2', 'l3']);
    expect(sub.events['job.packed']).toBeGreaterThan(0);
    expect(receivedRecords(await client.request('job.receive', { selector: 'once' }))).toEqual([]);
  });
});

describe('packed records over a real agent: bulk, slow readers, values and failures', () => {
  it('more output than the spool keeps in memory (8 MiB) arrives complete and in order', async () => {
    await startAgent();
    const session = await openSession(unixSocketTransport, door!.socketPath);
    sessions.push(session);
    const count = 8_000;
    const pad = 'p'.repeat(1000);
    const command = `awk 'BEGIN { for (i = 1; i <= ${count}; i++) print i ":${pad}" }'`;
    const invocation = session.invoke({ definition: { command } });
    let next = 1;
    let bad = 0;
    let slowed = 0;
    // A reader that falls behind now and then, so later batches come from the segment files.
    const reader = (async () => {
      for await (const each of invocation) {
        if (each.data !== `${next}:${pad}` || each.seq !== next) bad++;
        next++;
        if (next % 2000 === 0) {
          slowed++;
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
    })();
    await reader;
    expect((await invocation.result).state).toBe('Completed');
    expect(bad).toBe(0);
    expect(next - 1).toBe(count);
    expect(slowed).toBeGreaterThan(0);
  });

  it('non-string values and a failure: every value, then the reason last, the same on every run', async () => {
    await startAgent();
    const script = `
      for (let i = 0; i < 3000; i++) {
        if (i % 4 === 0) yield { i, tag: 'obj ✓' };
        else if (i % 4 === 1) yield 'text ' + i + ' 😀';
        else if (i % 4 === 2) yield i;
        else yield [i, null, 'x'];
      }
      throw new Error('boom at the end');`;
    const client = await openClient();
    const packed = collect(client, 'p');
    const packedInfo = await client.request('invoke', {
      subscriptionId: 'p',
      type: 'thread',
      definition: { eval: script },
    });
    await packed.end;
    const plain = collect(client, 'b');
    await client.request('invoke', {
      subscriptionId: 'b',
      type: 'thread',
      definition: { eval: script },
    });
    await plain.end;

    expect(packed.events['job.packed']).toBeGreaterThan(0);
    expect(packed.records).toHaveLength(3001);
    const values = packed.records.slice(0, 3000);
    expect(values.map((r) => r.data)).toEqual(
      Array.from({ length: 3000 }, (_, i) =>
        i % 4 === 0 ? { i, tag: 'obj ✓' } : i % 4 === 1 ? `text ${i} 😀` : i % 4 === 2 ? i : [i, null, 'x'],
      ),
    );
    expect(values.some((r) => r.reason)).toBe(false);
    const reason = packed.records.at(-1)!;
    expect(reason).toMatchObject({ stream: 'error', reason: true });
    expect(JSON.stringify(reason.data)).toContain('boom at the end');
    expect(packedInfo.state).toBe('Failed');
    // A second run, the same records (apart from the time and job id).
    const strip = (r: JobRecord) => ({ stream: r.stream, data: r.data, seq: r.seq, reason: r.reason });
    expect(plain.records.slice(0, 3000).map(strip)).toEqual(values.map(strip));
    expect(plain.records.at(-1)).toMatchObject({ stream: 'error', reason: true });
  });
});

describe('packed records over a real agent (records held in memory)', () => {
  it('a memory agent sends job.packed too: its records are encoded on the way out', async () => {
    await startAgent({ persist: false });
    const client = await openClient();
    const { events, records, end } = collect(client, 'mem');
    await client.request('invoke', { subscriptionId: 'mem', definition: { command: MIXED_COMMAND } });
    await end;
    expect(events['job.packed']).toBeGreaterThan(0);
    expect(Object.keys(events).sort()).toEqual(['job.end', 'job.packed']);
    checkMixed(records);
  });

  it('a memory agent answers a subscription without follow, and job.receive, in the same form', async () => {
    await startAgent({ persist: false });
    const client = await openClient();
    await client.request('job.start', { name: 'held', definition: { command: MIXED_COMMAND } });
    await client.request('job.wait', { selector: 'held' });
    const now = collect(client, 'now');
    await client.request('job.subscribe', {
      selector: 'held',
      subscriptionId: 'now',
      keep: true,
      follow: false,
    });
    await now.end;
    expect(Object.keys(now.events).sort()).toEqual(['job.end', 'job.packed']);
    checkMixed(now.records);
    const answer = await client.request('job.receive', { selector: 'held' });
    expect(Array.isArray(answer.entries)).toBe(true);
    expect(answer.entries.every((run) => run instanceof Uint8Array)).toBe(true);
    expect(receivedRecords(answer)).toEqual(now.records);
    expect(receivedRecords(await client.request('job.receive', { selector: 'held' }))).toEqual([]);
  });
});

describe('job.receive answers packed (spooled jobs)', () => {
  it("one run per job, a Failed job's reason as its own run, consumed once acknowledged", async () => {
    await startAgent();
    const client = await openClient();
    await client.request('job.start', { name: 'ok', definition: { command: 'echo a; echo b' } });
    await client.request('job.start', { name: 'bad', definition: { command: 'echo c; exit 3' } });
    await client.request('job.wait', { selector: ['ok', 'bad'] });
    const answer = await client.request('job.receive', { selector: ['ok', 'bad'] });
    // ok's records, bad's records, bad's reason (numbered 0, so a run of its own).
    expect(answer.entries).toHaveLength(3);
    const records = receivedRecords(answer);
    expect(records.map((r) => r.data).slice(0, 3)).toEqual(['a', 'b', 'c']);
    expect(records.at(-1)).toMatchObject({ stream: 'error', reason: true, seq: 0 });
    expect(receivedRecords(await client.request('job.receive', { selector: 'ok' }))).toEqual([]);
  });
});
