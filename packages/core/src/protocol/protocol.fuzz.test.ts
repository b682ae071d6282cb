/**
 * Property-based fuzz of the receive path: malformed, truncated, oversized and out-of-order input
 * fed to the frame decoder, the message validator and the reliable channel. Every case must end
 * with the channel still fine or closed with a coded RjobError, never with an exception escaping,
 * and never affecting another channel.
 */
import { PassThrough } from 'node:stream';
import v8 from 'node:v8';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { RjobError, serializeError } from '../errors.js';
import { createMemoryLink } from '../testing/memory-transport.js';
import { channelFromDuplex } from '../transport/transport.js';
import { encodeFrame } from './framing.js';
import { serverHandshake } from './handshake.js';
import { decodeMessage, encodeMessage, type Message, validateMessage } from './messages.js';
import { ProtocolErrorCode } from './protocol-errors.js';
import { ReliableChannel, type ReliableChannelOptions } from './reliable-channel.js';

const options: ReliableChannelOptions = {
  pingIntervalMs: 0,
  heartbeatTimeoutMs: 0,
  windowMessages: 8,
  windowBytes: 4096,
  maxFrameBytes: 4096,
};
const KNOWN_CODES = new Set<string>(Object.values(ProtocolErrorCode));

const templates: Message[] = [
  { type: 'hello', versions: [1], token: 't' },
  { type: 'welcome', version: 1 },
  { type: 'open' },
  { type: 'resume', sessionId: 's', resumeSecret: 'x', lastSeq: 0 },
  { type: 'resume', sessionId: 's', resumeSecret: 'x', lastSeq: 0, takeover: true },
  { type: 'resume', sessionId: 's', resumeSecret: 'x', lastSeq: 2, epoch: 1 },
  { type: 'opened', sessionId: 's', resumeSecret: 'x' },
  { type: 'resumed', sessionId: 's', lastSeq: 0 },
  { type: 'resumed', sessionId: 's', lastSeq: 0, epoch: 1 },
  { type: 'ack', seq: 0 },
  { type: 'credit', seq: 4, bytes: 100 },
  { type: 'ping', nonce: 1 },
  { type: 'pong', nonce: 1 },
  { type: 'error', error: serializeError(new RjobError('ERR_SEQUENCE', 'x')) },
  { type: 'close', reason: 'bye' },
  { type: 'request', seq: 1, id: 1, method: 'm', params: [1] },
  { type: 'response', seq: 1, id: 1, result: new Date(0) },
  { type: 'event', seq: 1, name: 'e', data: new Map([[1, 2n]]) },
];

const anyValue = fc.anything({
  withBigInt: true,
  withDate: true,
  withMap: true,
  withSet: true,
  withTypedArray: true,
  withNullPrototype: true,
  maxDepth: 2,
  maxKeys: 4,
  size: 'xsmall',
});

const fieldNames = fc.constantFrom(
  'type',
  'seq',
  'id',
  'method',
  'name',
  'nonce',
  'bytes',
  'versions',
  'error',
  'lastSeq',
  'epoch',
  'takeover',
);

/** One frame body: garbage, a non-message value, a mutated message, or a valid message with odd numbers. */
const frameBody: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.uint8Array({ minLength: 1, maxLength: 64 }),
  anyValue.map((v) => v8.serialize(v)),
  fc
    .tuple(fc.constantFrom(...templates), fieldNames, anyValue, fc.boolean())
    .map(([t, key, value, remove]) => {
      const m: Record<string, unknown> = { ...t };
      if (remove) delete m[key];
      else m[key] = value;
      return v8.serialize(m);
    }),
  fc
    .tuple(
      fc.constantFrom<Message['type']>('event', 'request', 'response', 'ack', 'credit'),
      fc.oneof(fc.integer({ min: -3, max: 40 }), fc.double(), fc.constant(2 ** 53)),
    )
    .map(([type, seq]) => v8.serialize({ type, seq, id: 1, method: 'm', name: 'n', bytes: seq })),
  fc.tuple(fc.constantFrom(...templates), fc.integer({ min: 1, max: 40 })).map(([t, cut]) => {
    const body = encodeMessage(t);
    return body.subarray(0, Math.min(cut, body.byteLength - 1) || 1);
  }),
  fc.constantFrom(...templates).map((t) => encodeMessage(t)),
);

/** A prefix of valid in-order events, then fuzzed frames. */
const frameScript = fc.tuple(
  fc.integer({ min: 0, max: 5 }),
  fc.array(frameBody, { minLength: 1, maxLength: 6 }),
);

function isValidErrorMessage(body: Uint8Array): boolean {
  try {
    return decodeMessage(body).type === 'error';
  } catch {
    return false;
  }
}

function checkOutcome(channel: ReliableChannel, peerMayChooseCode: boolean): void {
  if (channel.state !== 'closed') {
    expect(channel.state).toBe('attached');
    return;
  }
  const reason = channel.closeReason;
  expect(RjobError.is(reason)).toBe(true);
  expect(typeof reason!.code).toBe('string');
  if (!peerMayChooseCode) expect(KNOWN_CODES.has(reason!.code)).toBe(true);
}

describe('protocol fuzz', () => {
  // A channel that must keep working whatever happens to the fuzzed ones.
  const bystanderLink = createMemoryLink();
  const bystanderA = new ReliableChannel(options);
  const bystanderB = new ReliableChannel(options);
  bystanderA.attach(bystanderLink.a, 0);
  bystanderB.attach(bystanderLink.b, 0);
  const bystanderGot: unknown[] = [];
  bystanderB.onMessage((m) => {
    bystanderGot.push(m);
  });
  let cases = 0;

  afterAll(() => {
    expect(cases).toBeGreaterThanOrEqual(10_000);
  });

  it('frames fed to the validator and reliable channel (7,000 cases)', () => {
    fc.assert(
      fc.property(frameScript, ([validPrefix, frames]) => {
        cases++;
        const link = createMemoryLink({ maxFrameBytes: 4096 });
        const peer = new ReliableChannel(options);
        const channel = new ReliableChannel(options);
        peer.attach(link.a, 0);
        channel.attach(link.b, 0);
        channel.onMessage(() => {});
        for (let seq = 1; seq <= validPrefix; seq++)
          link.inject('b', encodeMessage({ type: 'event', seq, name: 'ok' }));
        for (const frame of frames) link.inject('b', frame);
        checkOutcome(channel, frames.some(isValidErrorMessage));
        if (channel.state === 'closed') expect(link.closed).toBe(true);
        expect(bystanderA.state).toBe('attached');
        expect(bystanderB.state).toBe('attached');
      }),
      { numRuns: 7_000 },
    );
  });

  /** Raw bytes: valid frames, oversized headers, zero lengths, garbage, and streams cut short. */
  const byteChunk: fc.Arbitrary<Uint8Array> = fc.oneof(
    frameBody.map((body) => encodeFrame(body, { maxFrameBytes: 1 << 20 })),
    fc.integer({ min: 4097, max: 0xffffffff }).map((n) => {
      const header = new Uint8Array(4);
      new DataView(header.buffer).setUint32(0, n);
      return header;
    }),
    fc.constant(new Uint8Array([0, 0, 0, 0])),
    fc.uint8Array({ minLength: 1, maxLength: 32 }),
    fc
      .tuple(frameBody, fc.integer({ min: 1, max: 8 }))
      .map(([body, keep]) => encodeFrame(body).subarray(0, Math.min(keep, 3 + body.byteLength))),
  );

  it('bytes fed to the frame decoder, validator and reliable channel (3,000 cases)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(byteChunk, { minLength: 1, maxLength: 5 }),
        fc.array(fc.integer({ min: 1, max: 16 }), { minLength: 1, maxLength: 4 }),
        fc.boolean(),
        async (chunks, splits, endStream) => {
          cases++;
          const input = new PassThrough();
          const output = new PassThrough();
          output.resume();
          const link = channelFromDuplex({ readable: input, writable: output }, { maxFrameBytes: 4096 });
          const channel = new ReliableChannel(options);
          channel.attach(link, 0);
          channel.onMessage(() => {});
          const disconnected = new Promise<void>((resolve) => channel.onDisconnect(() => resolve()));
          const closed = new Promise<void>((resolve) => channel.onClose(() => resolve()));
          const bytes = Buffer.concat(chunks);
          let at = 0;
          let i = 0;
          while (at < bytes.byteLength) {
            const size = splits[i++ % splits.length]!;
            input.write(bytes.subarray(at, at + size));
            at += size;
          }
          if (endStream) input.end();
          // Wait for the outcome by events; a stream left open may simply have nothing to say.
          const settled = Promise.race([closed, disconnected]);
          for (let turn = 0; turn < 5; turn++) await new Promise<void>((resolve) => setImmediate(resolve));
          if (endStream) await settled;
          const peerChose = chunks.some((c) => c.byteLength > 4 && isValidErrorMessage(c.subarray(4)));
          if (channel.state === 'detached') {
            // Only an ended stream (cleanly or mid-frame) detaches; both are resumable cuts.
            expect(endStream).toBe(true);
          } else {
            checkOutcome(channel, peerChose);
          }
          channel.close();
          input.destroy();
        },
      ),
      { numRuns: 3_000 },
    );
    bystanderA.send({ type: 'event', name: 'still alive' });
    for (let i = 0; i < 10 && bystanderGot.length === 0; i++) await new Promise<void>((r) => setImmediate(r));
    expect(bystanderGot).toHaveLength(1);
  });

  /** A `resume` with fuzzed credentials, `lastSeq`, `epoch` and `takeover` fields. */
  const resumeBody = fc
    .record({
      sessionId: fc.constantFrom('s1', 's1', 's1', 'other'),
      resumeSecret: fc.constantFrom('secret', 'secret', 'secret', 'guess'),
      // Weighted towards values a real client sends, so that every outcome is reached often.
      lastSeq: fc.oneof(
        { arbitrary: fc.constant(0), weight: 3 },
        { arbitrary: fc.constant(2), weight: 3 },
        fc.integer({ min: -1, max: 4 }),
        fc.double(),
        fc.constant(2 ** 53),
      ),
      epoch: fc.oneof(
        { arbitrary: fc.constant(undefined), weight: 3 },
        fc.integer({ min: -1, max: 2 }),
        anyValue,
      ),
      takeover: fc.oneof(
        { arbitrary: fc.constant(undefined), weight: 2 },
        { arbitrary: fc.constant(true), weight: 2 },
        fc.boolean(),
        anyValue,
      ),
    })
    .map((fields) => {
      const m: Record<string, unknown> = { type: 'resume' };
      for (const [key, value] of Object.entries(fields)) if (value !== undefined) m[key] = value;
      return m;
    });

  it('resume and takeover requests against a session with history (1,000 cases)', async () => {
    const seen = { takenOver: 0, resumed: 0, refused: 0 };
    await fc.assert(
      fc.asyncProperty(resumeBody, async (resume) => {
        cases++;
        // A session whose channel carried two messages each way and is still attached.
        const oldLink = createMemoryLink();
        const peer = new ReliableChannel(options);
        let current = new ReliableChannel(options);
        const original = current;
        peer.attach(oldLink.a, 0);
        current.attach(oldLink.b, 0);
        peer.onMessage(() => {});
        current.onMessage(() => {});
        let takeovers = 0;
        current.onTakeover((event) => {
          takeovers++;
          current = event.channel;
        });
        peer.send({ type: 'request', id: 1, method: 'm' });
        peer.send({ type: 'request', id: 2, method: 'm' });
        current.send({ type: 'event', name: 'e' });
        current.send({ type: 'event', name: 'e' });
        for (let turn = 0; turn < 3; turn++) await new Promise<void>((resolve) => setImmediate(resolve));
        const before = [original.ackedSeq, original.receivedSeq, original.consumedSeq, original.sentSeq];

        const link = createMemoryLink();
        const outcome = serverHandshake(link.b, {
          open: () => {
            throw new RjobError('ERR_PROTOCOL_VIOLATION', 'not in this test');
          },
          resume: (request) => {
            if (request.sessionId !== 's1' || request.resumeSecret !== 'secret') {
              throw new RjobError('ERR_SESSION_NOT_FOUND', 'No such session.');
            }
            return current;
          },
        }).then(
          (result) => ({ ok: true as const, result }),
          (error: unknown) => ({ ok: false as const, error }),
        );
        link.inject('b', encodeMessage({ type: 'hello', versions: [1] }));
        link.inject('b', v8.serialize(resume));
        const settled = await outcome;

        let valid = true;
        try {
          validateMessage(resume);
        } catch {
          valid = false;
        }
        const authorised = resume.sessionId === 's1' && resume.resumeSecret === 'secret';
        if (!settled.ok) {
          seen.refused++;
          expect(RjobError.is(settled.error)).toBe(true);
          expect(KNOWN_CODES.has((settled.error as RjobError).code)).toBe(true);
          expect(takeovers).toBe(0);
          expect(link.closed).toBe(true);
          // Only a plain resume from a point that cannot be replayed may end the session.
          if ((settled.error as RjobError).code === 'ERR_RESUME_FAILED') {
            expect(valid && authorised && resume.takeover !== true).toBe(true);
          } else {
            expect(original.state).toBe('attached');
            expect(oldLink.closed).toBe(false);
            expect([original.ackedSeq, original.receivedSeq, original.consumedSeq, original.sentSeq]).toEqual(
              before,
            );
          }
        } else {
          expect(valid && authorised).toBe(true);
          if (resume.takeover === true) {
            seen.takenOver++;
            expect(settled.result.takenOver).toBe(true);
            expect(takeovers).toBe(1);
            expect(original.closeReason?.code).toBe('ERR_SESSION_TAKEN_OVER');
            expect(settled.result.channel).toBe(current);
            expect(current.epoch).toBe(1);
            expect(current.state).toBe('attached');
          } else {
            seen.resumed++;
            expect(takeovers).toBe(0);
            expect(settled.result.channel).toBe(original);
            expect(resume.epoch ?? 0).toBe(0);
          }
        }
        current.close();
        original.close();
        peer.close();
      }),
      { numRuns: 1_000 },
    );
    expect(seen.takenOver).toBeGreaterThan(20);
    expect(seen.resumed).toBeGreaterThan(20);
    expect(seen.refused).toBeGreaterThan(20);
  });
});
