// Property-based checks that nothing a peer sends can take the agent down: malformed frames and
// messages out of turn close only their own link, and requests with arbitrary params get coded
// answers. 10,000 cases over in-memory links, with a session that keeps working throughout.
import v8 from 'node:v8';
import { RjobError } from '@rjob/core';
import {
  clientHandshake,
  encodeMessage,
  type Message,
  ReliableChannel,
  type SequencedMessage,
} from '@rjob/core/protocol';
import { createMemoryLink, type MemoryLink } from '@rjob/core/testing';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentServer } from './agent-server.js';

let server: AgentServer;
let witness: { channel: ReliableChannel; link: MemoryLink };
let nextId = 1;

function newChannel(): ReliableChannel {
  return new ReliableChannel({ pingIntervalMs: 0, heartbeatTimeoutMs: 0 });
}

/** Sends a request on a client channel and resolves with the response. */
function call(channel: ReliableChannel, method: string, params?: unknown): Promise<SequencedMessage> {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    const off = channel.onMessage((message) => {
      if (message.type === 'response' && message.id === id) {
        off();
        resolve(message);
      }
    });
    channel.onClose(reject);
    channel.send({ type: 'request', id, method, ...(params === undefined ? {} : { params }) });
  });
}

async function openClient(): Promise<{ channel: ReliableChannel; link: MemoryLink }> {
  const link = createMemoryLink();
  server.attach(link.b).catch(() => {});
  const channel = newChannel();
  await clientHandshake(link.a, { channel });
  return { channel, link };
}

function closed(link: MemoryLink): Promise<RjobError> {
  return new Promise((resolve) => link.a.onClose(resolve));
}

async function witnessStillServes(): Promise<void> {
  const answer = await call(witness.channel, 'session.info');
  expect(answer).toMatchObject({ type: 'response', result: { state: 'Opened' } });
}

beforeAll(async () => {
  server = new AgentServer({ stateDir: '/nonexistent-not-used', persist: false, handshakeTimeoutMs: 2_000 });
  witness = await openClient();
});

afterAll(async () => {
  witness.link.cut();
  await server.close();
});

const junkBytes = fc.uint8Array({ minLength: 1, maxLength: 96 });
/** Plain objects that are (mostly) not valid messages, and valid ones at the wrong time. */
const wrongMessages: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom<unknown>(
    { type: 'open' },
    { type: 'welcome', version: 1 },
    { type: 'ack', seq: 5 },
    { type: 'credit', seq: 1, bytes: 10 },
    { type: 'resumed', sessionId: 'x', lastSeq: 0 },
    { type: 'hello', versions: [] },
    { type: 'hello', versions: [999] },
    { type: 'request', seq: 1, id: 1, method: 'session.info' },
  ),
  fc.record({ type: fc.string({ maxLength: 10 }), seq: fc.integer(), id: fc.integer() }),
  fc.anything(),
);
const encodedJunk = wrongMessages.map((value) => {
  try {
    return new Uint8Array(v8.serialize(value));
  } catch {
    return new Uint8Array([0xff, 0x0f, 0x30]);
  }
});

describe('AgentServer under fuzzing', () => {
  it('closes the link on garbage before or instead of a handshake (6,000 cases)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.oneof(junkBytes, encodedJunk), { minLength: 1, maxLength: 3 }),
        async (frames) => {
          const link = createMemoryLink();
          const attached = server.attach(link.b).then(
            () => undefined,
            (error: unknown) => error,
          );
          const ended = closed(link);
          for (const frame of frames) link.inject('b', frame);
          // A valid-looking start (a plain hello) may be answered; then the client goes silent and
          // the handshake times out. Cut it to keep the run short: what matters is the agent.
          const result = await Promise.race([attached, ended.then(() => 'closed')]);
          link.cut();
          const outcome = await attached;
          if (result !== 'closed' && outcome === undefined) throw new Error('garbage completed a handshake');
        },
      ),
      { numRuns: 6_000 },
    );
    await witnessStillServes();
  });

  it('closes only the offending link on violations after the handshake (3,000 cases)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          junkBytes,
          fc
            .record({
              type: fc.constantFrom('request', 'response', 'event'),
              seq: fc.oneof(fc.constant(0), fc.integer({ min: 2, max: 1e9 })),
              id: fc.nat(),
              method: fc.string({ minLength: 1, maxLength: 20 }),
              name: fc.string({ minLength: 1, maxLength: 20 }),
            })
            .map((message) => encodeMessage(message as Message)),
          fc
            .constantFrom<Message>(
              { type: 'hello', versions: [1] },
              { type: 'open' },
              { type: 'ack', seq: 1_000_000 },
              { type: 'resume', sessionId: 'x', resumeSecret: 'y', lastSeq: 0 },
            )
            .map((message) => encodeMessage(message)),
        ),
        async (frame) => {
          const client = await openClient();
          const ended = closed(client.link);
          client.link.inject('b', frame);
          const reason = await ended;
          expect(RjobError.is(reason)).toBe(true);
          client.link.cut();
        },
      ),
      { numRuns: 3_000 },
    );
    await witnessStillServes();
  });

  it('answers requests with arbitrary methods and params with a response (1,000 cases)', async () => {
    const client = await openClient();
    const methods = fc.oneof(
      fc.constantFrom(
        'session.info',
        'session.list',
        'session.configure',
        'job.get',
        'job.receive',
        'job.wait',
        'job.stop',
        'job.remove',
        'job.subscribe',
        'job.unsubscribe',
      ),
      fc.string({ minLength: 1, maxLength: 30 }),
    );
    await fc.assert(
      fc.asyncProperty(methods, fc.anything(), async (method, params) => {
        let response: SequencedMessage;
        try {
          response = await call(client.channel, method, params);
        } catch (error) {
          // Only a value the client cannot even encode (the codec refuses it) never leaves.
          if (RjobError.hasCode(error, 'ERR_VALUE_NOT_CLONEABLE')) return;
          throw error;
        }
        expect(response.type).toBe('response');
        if (response.type === 'response' && response.error) expect(typeof response.error.code).toBe('string');
      }),
      { numRuns: 1_000 },
    );
    expect(client.channel.state).toBe('attached');
    await witnessStillServes();
    client.link.cut();
  });
});
