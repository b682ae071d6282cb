import { describe, expect, it } from 'vitest';
import { encodeRecordEntries } from '../codec/record-entries.js';
import { RjobError } from '../errors.js';
import type { JobRecord } from '../job/records.js';
import { ProtocolErrorCode } from '../protocol/protocol-errors.js';
import type { ReliableChannelOptions } from '../protocol/reliable-channel.js';
import { createMemoryNetwork } from '../testing/memory-transport.js';
import type { JobInfo } from './rpc.js';
import { openSession } from './session.js';
import type { RemoteRecord } from './session-types.js';
import { type MethodHandler, TestAgent } from './test-agent.js';

const quiet: ReliableChannelOptions = { pingIntervalMs: 0, heartbeatTimeoutMs: 0 };

function record(seq: number, data: unknown): JobRecord {
  return {
    stream: seq % 2 ? 'output' : 'error',
    data,
    seq,
    timeMs: 1_700_000_000_000 + seq,
    jobId: 1,
    location: 'localhost',
  };
}

const jobInfo = (state: JobInfo['state'] = 'Completed'): JobInfo => ({
  id: 1,
  instanceId: '00000000-0000-0000-0000-000000000001',
  name: 'Job1',
  type: 'StubJob',
  state,
  hasMoreData: false,
  location: 'localhost',
  command: 'scripted',
  beginTimeMs: 0,
  endTimeMs: 0,
  childIds: [],
});

/** A TestAgent whose `invoke` sends the given `job.packed` payloads, then (optionally) ends. */
function agentSending(
  payloads: (subscriptionId: string) => unknown[],
  options: { end?: boolean; seen?: Array<Record<string, unknown>> } = {},
) {
  const network = createMemoryNetwork();
  const invoke: MethodHandler = async (params: Record<string, unknown>, session) => {
    options.seen?.push(params);
    const subscriptionId = params.subscriptionId as string;
    await new Promise((resolve) => setImmediate(resolve));
    for (const data of payloads(subscriptionId)) {
      session.channel.send({ type: 'event', name: 'job.packed', data });
    }
    if (options.end === false) return new Promise(() => {});
    session.channel.send({ type: 'event', name: 'job.end', data: { subscriptionId, jobs: [jobInfo()] } });
    return jobInfo();
  };
  const agent = new TestAgent({
    methods: { invoke, 'job.subscribe': subscribeLike(payloads, options.seen) },
  });
  agent.listen(network, 'server01');
  return { network, agent };
}

/** `job.subscribe` that answers, then sends the payloads and `job.end`. */
function subscribeLike(
  payloads: (subscriptionId: string) => unknown[],
  seen?: Array<Record<string, unknown>>,
): MethodHandler {
  return (params: { subscriptionId: string }, session) => {
    seen?.push(params);
    setImmediate(() => {
      for (const data of payloads(params.subscriptionId)) {
        session.channel.send({ type: 'event', name: 'job.packed', data });
      }
      session.channel.send({
        type: 'event',
        name: 'job.end',
        data: { subscriptionId: params.subscriptionId, jobs: [jobInfo()] },
      });
    });
    return [jobInfo('Running')];
  };
}

async function drain(iterable: AsyncIterable<RemoteRecord>): Promise<RemoteRecord[]> {
  const out: RemoteRecord[] = [];
  for await (const each of iterable) out.push(each);
  return out;
}

describe('Session: job.packed events', () => {
  it('invoke decodes job.packed batches into records, in order, with the computer name', async () => {
    const all = Array.from({ length: 50 }, (_, i) => record(i + 1, i % 5 === 0 ? { n: i } : `line ${i} ✓`));
    const seen: Array<Record<string, unknown>> = [];
    const { network } = agentSending(
      (subscriptionId) => [
        { subscriptionId, entries: encodeRecordEntries(all.slice(0, 20), 1) },
        // A plain Uint8Array (not a Buffer) decodes as well.
        { subscriptionId, entries: new Uint8Array(encodeRecordEntries(all.slice(20), 21)) },
      ],
      { seen },
    );
    const session = await openSession(network.transport, 'server01', { channel: quiet });
    const invocation = session.invoke({ definition: { lines: 0 } });
    const records = await drain(invocation);
    await invocation.result;
    // One form only: the request chooses none.
    expect(Object.keys(seen[0]!).sort()).toEqual(['definition', 'subscriptionId']);
    expect(records).toEqual(all.map((each) => ({ ...each, computerName: session.computerName })));
    expect(session.state).toBe('Opened');
    await session.close();
  });

  it('subscribe decodes job.packed batches', async () => {
    const all = Array.from({ length: 10 }, (_, i) => record(i + 1, `r${i}`));
    const seen: Array<Record<string, unknown>> = [];
    const { network, agent } = agentSending(
      (subscriptionId) => [{ subscriptionId, entries: encodeRecordEntries(all, 1) }],
      { seen },
    );
    const session = await openSession(network.transport, 'server01', { channel: quiet });
    const got: RemoteRecord[] = [];
    const ended = new Promise<void>((resolve) => {
      session.subscribe(1, {
        onRecord: (each) => {
          got.push(each);
        },
        onEnd: () => resolve(),
      });
    });
    await ended;
    expect(agent.calls.get('job.subscribe')).toBe(1);
    expect(got.map((r) => r.data)).toEqual(all.map((r) => r.data));
    expect(got.map((r) => r.seq)).toEqual(all.map((r) => r.seq));
    expect(seen[0]).toMatchObject({ selector: 1 });
    expect(Object.keys(seen[0]!).sort()).toEqual(['clientAck', 'selector', 'subscriptionId']);
    await session.close();
  });

  it('a malformed job.packed fails the session with ERR_MESSAGE_INVALID and does not crash', async () => {
    const good = encodeRecordEntries([record(1, 'ok'), record(2, 'ok too')], 1);
    const { network } = agentSending(
      (subscriptionId) => [{ subscriptionId, entries: good.subarray(0, good.length - 3) }],
      { end: false },
    );
    const session = await openSession(network.transport, 'server01', { channel: quiet });
    const broken = new Promise<RjobError | undefined>((resolve) =>
      session.onStateChange(({ state }) => {
        if (state === 'Broken') resolve(session.reason);
      }),
    );
    const invocation = session.invoke({ definition: { lines: 0 } });
    const iterated = drain(invocation).then(
      () => undefined,
      (error: unknown) => error,
    );
    const reason = await broken;
    expect(RjobError.hasCode(reason, ProtocolErrorCode.MessageInvalid)).toBe(true);
    expect(session.state).toBe('Broken');
    await expect(invocation.result).rejects.toBeInstanceOf(Error);
    expect(await iterated).toBeInstanceOf(Error);
    // The process goes on: a new session to the same agent works.
    const other = await openSession(network.transport, 'server01', { channel: quiet });
    expect((await other.request('session.info')).sessionId).toBe(other.sessionId);
    await other.close();
  });

  it('job.packed whose entries are not bytes fails the session with ERR_MESSAGE_INVALID', async () => {
    const { network } = agentSending((subscriptionId) => [{ subscriptionId, entries: 'not bytes' }], {
      end: false,
    });
    const session = await openSession(network.transport, 'server01', { channel: quiet });
    const broken = new Promise<RjobError | undefined>((resolve) =>
      session.onStateChange(({ state }) => {
        if (state === 'Broken') resolve(session.reason);
      }),
    );
    const invocation = session.invoke({ definition: { lines: 0 } });
    invocation.result.catch(() => {});
    expect(RjobError.hasCode(await broken, ProtocolErrorCode.MessageInvalid)).toBe(true);
  });

  it('entries with a sequence gap are refused, not delivered in part', async () => {
    const first = encodeRecordEntries([record(1, 'a')], 1);
    const third = encodeRecordEntries([record(3, 'c')], 3);
    const { network } = agentSending(
      (subscriptionId) => [{ subscriptionId, entries: Buffer.concat([first, third]) }],
      { end: false },
    );
    const session = await openSession(network.transport, 'server01', { channel: quiet });
    const delivered: RemoteRecord[] = [];
    const broken = new Promise<RjobError | undefined>((resolve) =>
      session.onStateChange(({ state }) => {
        if (state === 'Broken') resolve(session.reason);
      }),
    );
    const invocation = session.invoke(
      { definition: { lines: 0 } },
      { onRecord: (r) => void delivered.push(r) },
    );
    invocation.result.catch(() => {});
    expect(RjobError.hasCode(await broken, ProtocolErrorCode.MessageInvalid)).toBe(true);
    expect(delivered).toEqual([]);
  });

  it('a job.packed for a subscription the client does not know is ignored', async () => {
    const all = [record(1, 'mine')];
    const { network } = agentSending((subscriptionId) => [
      { subscriptionId: 'someone-else', entries: new Uint8Array([1, 2, 3]) },
      { subscriptionId, entries: encodeRecordEntries(all, 1) },
    ]);
    const session = await openSession(network.transport, 'server01', { channel: quiet });
    const invocation = session.invoke({ definition: { lines: 0 } });
    expect((await drain(invocation)).map((r) => r.data)).toEqual(['mine']);
    await invocation.result;
    expect(session.state).toBe('Opened');
    await session.close();
  });
});

describe('Session: packed answers', () => {
  /** A TestAgent whose `job.receiveToFile` answers with `other` as given. */
  async function receiveToFileAnswering(other: unknown) {
    const network = createMemoryNetwork();
    const agent = new TestAgent({
      methods: {
        'job.receiveToFile': () => ({ path: '/tmp/out.txt', records: 2, bytes: 4, other }),
      },
    });
    agent.listen(network, 'server01');
    return openSession(network.transport, 'server01', { channel: quiet });
  }

  it('receiveToFile decodes the other records from runs and tags them', async () => {
    const warning = { ...record(2, 'careful'), stream: 'warning' as const };
    const session = await receiveToFileAnswering([encodeRecordEntries([warning], 2)]);
    const written = await session.jobs.receiveToFile(1, 'out.txt');
    expect(written).toMatchObject({ path: '/tmp/out.txt', records: 2, bytes: 4 });
    expect(written.other).toEqual([{ ...warning, computerName: session.computerName }]);
    await session.close();
  });

  it('receiveToFile whose other records are malformed rejects with ERR_MESSAGE_INVALID', async () => {
    const good = encodeRecordEntries([record(1, 'a'), record(2, 'b')], 1);
    for (const other of [[good.subarray(0, good.length - 2)], [{ record: 1 }], record(1, 'a')]) {
      const session = await receiveToFileAnswering(other);
      const error = await session.jobs.receiveToFile(1, 'out.txt').catch((e: unknown) => e);
      expect(RjobError.hasCode(error, ProtocolErrorCode.MessageInvalid)).toBe(true);
      await session.close();
    }
  });

  it('the record events that are gone (job.record, job.records) deliver nothing', async () => {
    const network = createMemoryNetwork();
    const agent = new TestAgent({
      methods: {
        'job.subscribe': (params: { subscriptionId: string }, session) => {
          const subscriptionId = params.subscriptionId;
          setImmediate(() => {
            session.channel.send({
              type: 'event',
              name: 'job.record',
              data: { subscriptionId, record: record(1, 'old') },
            });
            session.channel.send({
              type: 'event',
              name: 'job.records',
              data: { subscriptionId, records: [record(1, 'old')] },
            });
            session.channel.send({
              type: 'event',
              name: 'job.packed',
              data: { subscriptionId, entries: encodeRecordEntries([record(1, 'new')], 1) },
            });
            session.channel.send({
              type: 'event',
              name: 'job.end',
              data: { subscriptionId, jobs: [jobInfo()] },
            });
          });
          return [jobInfo('Running')];
        },
      },
    });
    agent.listen(network, 'server01');
    const session = await openSession(network.transport, 'server01', { channel: quiet });
    const got: RemoteRecord[] = [];
    await new Promise<void>((resolve) => {
      session.subscribe(1, { onRecord: (r) => void got.push(r), onEnd: () => resolve() });
    });
    expect(got.map((r) => r.data)).toEqual(['new']);
    await session.close();
  });
});
