import v8 from 'node:v8';
import { describe, expect, it } from 'vitest';
import { RjobError, serializeError } from '../errors.js';
import { decodeMessage, encodeMessage, isSequenced, type Message, validateMessage } from './messages.js';

const valid: Message[] = [
  { type: 'hello', versions: [1], token: 't', software: 'rjob/0' },
  { type: 'hello', versions: [2, 1] },
  { type: 'welcome', version: 1 },
  { type: 'open' },
  { type: 'resume', sessionId: 's', resumeSecret: 'x', lastSeq: 0 },
  { type: 'resume', sessionId: 's', resumeSecret: 'x', lastSeq: 0, takeover: true },
  { type: 'resume', sessionId: 's', resumeSecret: 'x', lastSeq: 7, takeover: false, epoch: 2 },
  { type: 'opened', sessionId: 's', resumeSecret: 'x' },
  { type: 'resumed', sessionId: 's', lastSeq: 12 },
  { type: 'resumed', sessionId: 's', lastSeq: 0, epoch: 1 },
  { type: 'ack', seq: 0 },
  { type: 'credit', seq: 10, bytes: 1024 },
  { type: 'ping', nonce: 1 },
  { type: 'pong', nonce: 1 },
  { type: 'error', error: serializeError(new RjobError('ERR_X', 'x', { cause: new Error('y') })) },
  { type: 'close' },
  { type: 'close', reason: 'bye' },
  { type: 'request', seq: 1, id: 0, method: 'job.start', params: { a: 1 } },
  { type: 'response', seq: 2, id: 0, result: undefined },
  { type: 'response', seq: 3, id: 0, error: { name: 'RjobError', message: 'no', code: 'ERR_JOB_NOT_FOUND' } },
  { type: 'event', seq: 4, name: 'job.state', data: { when: new Date(0) } },
];

function invalid(value: unknown): RjobError {
  try {
    validateMessage(value);
  } catch (error) {
    expect(RjobError.hasCode(error, 'ERR_MESSAGE_INVALID')).toBe(true);
    return error as RjobError;
  }
  throw new Error(`accepted ${JSON.stringify(value)}`);
}

describe('messages', () => {
  it('round-trips every message type', () => {
    for (const message of valid) expect(decodeMessage(encodeMessage(message))).toEqual(message);
  });

  it('keeps structured-clone fidelity for payloads', () => {
    const data = {
      when: new Date(1_700_000_000_000),
      big: 2n ** 70n,
      map: new Map<unknown, unknown>([[1, new Set(['a'])]]),
      bytes: new Uint8Array([1, 2, 3]),
      nested: { deep: [undefined, null, Number.NaN, -0] },
    };
    const out = decodeMessage(encodeMessage({ type: 'event', seq: 1, name: 'x', data }));
    expect(out).toEqual({ type: 'event', seq: 1, name: 'x', data });
  });

  it('tells sequenced messages apart', () => {
    expect(valid.filter(isSequenced).map((m) => m.type)).toEqual([
      'request',
      'response',
      'response',
      'event',
    ]);
  });

  it('rejects functions when encoding with ERR_VALUE_NOT_CLONEABLE', () => {
    expect(() => encodeMessage({ type: 'event', seq: 1, name: 'x', data: () => 1 })).toThrow(
      expect.objectContaining({ code: 'ERR_VALUE_NOT_CLONEABLE' }),
    );
  });

  it('rejects undecodable bodies', () => {
    expect(() => decodeMessage(new Uint8Array([1, 2, 3]))).toThrow(
      expect.objectContaining({ code: 'ERR_MESSAGE_INVALID' }),
    );
  });

  it('rejects values that are not messages', () => {
    for (const value of [
      null,
      1,
      'hello',
      [],
      new Map([['type', 'ping']]),
      new Date(0),
      { type: 'nope' },
      {},
    ]) {
      invalid(value);
    }
    class Fake {
      type = 'open';
    }
    invalid(new Fake());
    // Inherited fields do not count.
    invalid(Object.create({ type: 'open' }));
  });

  it('rejects wrong and missing fields', () => {
    const bad: unknown[] = [
      { type: 'hello', versions: [] },
      { type: 'hello', versions: [0] },
      { type: 'hello', versions: [1.5] },
      { type: 'hello', versions: '1' },
      { type: 'hello', versions: Array(17).fill(1) },
      { type: 'hello', versions: [1], token: 5 },
      { type: 'hello', versions: [1], token: 'x'.repeat(9000) },
      { type: 'welcome' },
      { type: 'welcome', version: 0 },
      { type: 'resume', sessionId: '', resumeSecret: 'x', lastSeq: 0 },
      { type: 'resume', sessionId: 's', resumeSecret: 'x', lastSeq: -1 },
      { type: 'resume', sessionId: 's', lastSeq: 0 },
      { type: 'resume', sessionId: 's', resumeSecret: 'x', lastSeq: 0, takeover: 'yes' },
      { type: 'resume', sessionId: 's', resumeSecret: 'x', lastSeq: 0, takeover: 1 },
      { type: 'resume', sessionId: 's', resumeSecret: 'x', lastSeq: 3, takeover: true },
      { type: 'resume', sessionId: 's', resumeSecret: 'x', lastSeq: 0, epoch: -1 },
      { type: 'resume', sessionId: 's', resumeSecret: 'x', lastSeq: 0, epoch: 1.5 },
      { type: 'resumed', sessionId: 's', lastSeq: 0, epoch: '1' },
      { type: 'opened', sessionId: 's' },
      { type: 'resumed', sessionId: 's', lastSeq: 1.5 },
      { type: 'ack' },
      { type: 'ack', seq: -1 },
      { type: 'ack', seq: 1.5 },
      { type: 'ack', seq: Number.NaN },
      { type: 'ack', seq: 2 ** 60 },
      { type: 'ack', seq: '1' },
      { type: 'ack', seq: 1n },
      { type: 'credit', seq: 1 },
      { type: 'ping' },
      { type: 'pong', nonce: -3 },
      { type: 'error' },
      { type: 'error', error: { message: 'x' } },
      { type: 'error', error: { name: 'E', message: 'x', cause: { name: 'E' } } },
      { type: 'error', error: { name: 'E', message: 'x', details: [] } },
      { type: 'close', reason: 7 },
      { type: 'request', seq: 0, id: 1, method: 'm' },
      { type: 'request', seq: 1, id: 1, method: '' },
      { type: 'request', seq: 1, method: 'm' },
      { type: 'response', seq: 1, id: 1, error: 'boom' },
      { type: 'event', seq: 1 },
      { type: 'event', seq: 1, name: 3 },
    ];
    for (const value of bad) invalid(value);
  });

  it('limits error cause depth', () => {
    let error: Record<string, unknown> = { name: 'E', message: 'x' };
    for (let i = 0; i < 10; i++) error = { name: 'E', message: 'x', cause: error };
    expect(invalid({ type: 'error', error }).details).toMatchObject({ type: 'error' });
  });

  it('ignores unknown extra fields', () => {
    expect(validateMessage({ type: 'ping', nonce: 1, future: true })).toMatchObject({ type: 'ping' });
  });

  it('decodes v8 bodies of non-message values as invalid, not as crashes', () => {
    for (const value of [new Error('x'), [1, 2], 5n, new Uint8Array(4)]) {
      expect(() => decodeMessage(v8.serialize(value))).toThrow(
        expect.objectContaining({ code: 'ERR_MESSAGE_INVALID' }),
      );
    }
  });
});
