// How core's session client takes `job.packed` events (records as the spool's packed entries),
// from the real agent. The agent's side of the link goes through a LinkTap whose rewrite turns
// every record event into `job.packed` (so these tests exercise the packed form whichever event
// the agent picked), and, for the malformed cases, damages what one event carries: a healthy agent
// never sends such events, and only a wrapper on the link can make it.
import {
  type JobRecord,
  openSession,
  ProtocolErrorCode,
  type RemoteRecord,
  RjobError,
  type StreamName,
} from '@rjob/core';
import { encodeRecordEntries } from '@rjob/core/codec';
import type { EventMessage } from '@rjob/core/protocol';
import { createMemoryNetwork } from '@rjob/core/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { AgentHost, closeAgentHosts, quiet } from '../fixtures/agent-host.js';
import { recordsIn, subscriptionOf } from '../fixtures/link-tap.js';
import { scripted } from '../fixtures/scripted-job-type.js';
import { until } from '../fixtures/until.js';

afterEach(() => closeAgentHosts());

async function setup() {
  const network = createMemoryNetwork();
  const agent = await AgentHost.start(network, 'server01');
  return { network, agent };
}

/** What a record of the scripted job is written with: alternating streams, text and objects. */
function written(i: number, data: unknown): { stream: StreamName; data: unknown } {
  return { stream: i % 2 ? 'error' : 'output', data };
}

/** The packed entries of a record event: as sent when packed, else packed here. */
function entriesOf(event: EventMessage): Uint8Array {
  if (event.name === 'job.packed') return (event.data as { entries: Uint8Array }).entries;
  const records = recordsIn(event);
  return encodeRecordEntries(records, records[0]!.seq);
}

/** A record event as `job.packed` carrying `entries`. */
function packed(event: EventMessage, entries: unknown = entriesOf(event)): EventMessage {
  return { ...event, name: 'job.packed', data: { subscriptionId: subscriptionOf(event), entries } };
}

/** Rewrites the first record event with `damage`, and every record event as `job.packed`. */
function damageFirst(agent: AgentHost, damage: (event: EventMessage) => unknown): void {
  let first = true;
  agent.tap.rewrite = (event) => {
    if (!first) return packed(event);
    first = false;
    return packed(event, damage(event));
  };
}

async function drain(iterable: AsyncIterable<RemoteRecord>): Promise<RemoteRecord[]> {
  const out: RemoteRecord[] = [];
  for await (const each of iterable) out.push(each);
  return out;
}

describe('Session: job.packed events', () => {
  it('invoke decodes job.packed batches into records, in order, with the computer name', async () => {
    const all = Array.from({ length: 50 }, (_, i) => written(i, i % 5 === 0 ? { n: i } : `line ${i} ✓`));
    const { network, agent } = await setup();
    // The first event's entries go as a Buffer, later ones as a plain Uint8Array: both decode.
    const forms: string[] = [];
    agent.tap.rewrite = (event) => {
      const entries = entriesOf(event);
      const plain = forms.length > 0 ? new Uint8Array(entries) : Buffer.from(entries);
      forms.push(Buffer.isBuffer(plain) ? 'Buffer' : 'Uint8Array');
      return packed(event, plain);
    };
    const session = await openSession(network.transport, 'server01', { channel: quiet });
    const startedAtMs = Date.now();
    // Two halves with a gate between them, so they cannot come in one event.
    const invocation = session.invoke(
      scripted({ records: all.slice(0, 20), more: { gate: 'rest', records: all.slice(20) } }),
    );
    await until(() => agent.tap.recordsSent === 20);
    agent.gates.open('rest');
    const records = await drain(invocation);
    const info = await invocation.result;
    // One form only: the request chooses none.
    const params = agent.tap.requests.find((r) => r.method === 'invoke')?.params;
    expect(params).toBeDefined();
    expect(params).not.toHaveProperty('batch');
    expect(params).not.toHaveProperty('packed');
    expect(forms[0]).toBe('Buffer');
    expect(forms.slice(1)).toContain('Uint8Array');
    expect(records).toEqual(
      all.map((each, i) => ({
        ...each,
        seq: i + 1,
        timeMs: expect.any(Number),
        jobId: info.id,
        location: 'localhost',
        computerName: session.computerName,
      })),
    );
    expect(records.every((r) => r.timeMs >= startedAtMs && r.timeMs <= Date.now())).toBe(true);
    expect(session.state).toBe('Opened');
    await session.close();
  });

  it('subscribe decodes job.packed batches', async () => {
    const all = Array.from({ length: 10 }, (_, i) => written(i, `r${i}`));
    const { network, agent } = await setup();
    agent.tap.rewrite = (event) => packed(event);
    const session = await openSession(network.transport, 'server01', { channel: quiet });
    const job = await session.jobs.start(scripted({ records: all }));
    const got: RemoteRecord[] = [];
    const ended = new Promise<void>((resolve) => {
      session.subscribe(job.id, {
        onRecord: (each) => {
          got.push(each);
        },
        onEnd: () => resolve(),
      });
    });
    await ended;
    expect(agent.tap.calls('job.subscribe')).toBe(1);
    expect(got.map((r) => r.data)).toEqual(all.map((r) => r.data));
    expect(got.map((r) => r.seq)).toEqual(all.map((_, i) => i + 1));
    const params = agent.tap.requests.find((r) => r.method === 'job.subscribe')?.params;
    expect(params).toMatchObject({ selector: job.id });
    expect(params).not.toHaveProperty('batch');
    expect(params).not.toHaveProperty('packed');
    await session.close();
  });

  it('a malformed job.packed fails the session with ERR_MESSAGE_INVALID and does not crash', async () => {
    const { network, agent } = await setup();
    damageFirst(agent, (event) => {
      const good = entriesOf(event);
      return good.subarray(0, good.length - 3);
    });
    const session = await openSession(network.transport, 'server01', { channel: quiet });
    const broken = new Promise<RjobError | undefined>((resolve) =>
      session.onStateChange(({ state }) => {
        if (state === 'Broken') resolve(session.reason);
      }),
    );
    const invocation = session.invoke(scripted({ records: [written(0, 'ok'), written(1, 'ok too')] }));
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
    const { network, agent } = await setup();
    damageFirst(agent, () => 'not bytes');
    const session = await openSession(network.transport, 'server01', { channel: quiet });
    const broken = new Promise<RjobError | undefined>((resolve) =>
      session.onStateChange(({ state }) => {
        if (state === 'Broken') resolve(session.reason);
      }),
    );
    const invocation = session.invoke(scripted({ lines: 1 }));
    invocation.result.catch(() => {});
    expect(RjobError.hasCode(await broken, ProtocolErrorCode.MessageInvalid)).toBe(true);
  });

  it('entries with a sequence gap are refused, not delivered in part', async () => {
    const { network, agent } = await setup();
    // The first record, then one numbered two further on: the one between is missing.
    damageFirst(agent, (event) => {
      const first: JobRecord = recordsIn(event)[0]!;
      return Buffer.concat([
        encodeRecordEntries([first], first.seq),
        encodeRecordEntries([{ ...first, data: 'c' }], first.seq + 2),
      ]);
    });
    const session = await openSession(network.transport, 'server01', { channel: quiet });
    const delivered: RemoteRecord[] = [];
    const broken = new Promise<RjobError | undefined>((resolve) =>
      session.onStateChange(({ state }) => {
        if (state === 'Broken') resolve(session.reason);
      }),
    );
    const invocation = session.invoke(scripted({ records: [written(0, 'a')] }), {
      onRecord: (r) => void delivered.push(r),
    });
    invocation.result.catch(() => {});
    expect(RjobError.hasCode(await broken, ProtocolErrorCode.MessageInvalid)).toBe(true);
    expect(delivered).toEqual([]);
  });

  it('a job.packed for a subscription the client does not know is ignored', async () => {
    const { network, agent } = await setup();
    // Records for a subscription this client object never made (as a request straight on the
    // session): their event carries bytes that are not even entries, and is not looked at.
    let foreign = 0;
    agent.tap.rewrite = (event) => {
      if (subscriptionOf(event) !== 'someone-else') return packed(event);
      foreign++;
      return packed(event, new Uint8Array([1, 2, 3]));
    };
    const session = await openSession(network.transport, 'server01', { channel: quiet });
    const theirs = await session.jobs.start(scripted({ records: [written(0, 'theirs')] }));
    await session.jobs.wait(theirs.id);
    await session.request('job.subscribe', {
      selector: theirs.id,
      subscriptionId: 'someone-else',
    });
    await until(() => agent.tap.recordsSent === 1);
    const invocation = session.invoke(scripted({ records: [written(0, 'mine')] }));
    expect((await drain(invocation)).map((r) => r.data)).toEqual(['mine']);
    await invocation.result;
    expect(foreign).toBe(1);
    expect(agent.tap.recordsSent).toBe(2);
    expect(session.state).toBe('Opened');
    await session.close();
  });

  it('the record events that are gone (job.record, job.records) deliver nothing', async () => {
    const { network, agent } = await setup();
    // Every record event the agent sends arrives under an old name: the client drops them all.
    let renamed = 0;
    agent.tap.rewrite = (event) => {
      const records = recordsIn(event);
      renamed++;
      return renamed % 2
        ? {
            ...event,
            name: 'job.record',
            data: { subscriptionId: subscriptionOf(event), record: records[0] },
          }
        : { ...event, name: 'job.records', data: { subscriptionId: subscriptionOf(event), records } };
    };
    const session = await openSession(network.transport, 'server01', { channel: quiet });
    const invocation = session.invoke(scripted({ records: [written(0, 'a'), written(1, 'b')] }));
    expect(await drain(invocation)).toEqual([]);
    expect((await invocation.result).state).toBe('Completed');
    expect(renamed).toBeGreaterThan(0);
    expect(session.state).toBe('Opened');
    await session.close();
  });
});
