import { describe, expect, it } from 'vitest';
import { deserializeError, RjobError, serializeError } from '../errors.js';
import { serializeError as runtimeSerializeError } from './serialize-error.js';

describe('serializeError', () => {
  it('is one function for core and the JS-work runtime, and keeps exitCode, signal and timedOut', () => {
    expect(serializeError).toBe(runtimeSerializeError);
    const error = new RjobError('ERR_JOB_EXIT_CODE', 'exit 3', {
      exitCode: 3,
      signal: 'SIGTERM',
      timedOut: true,
      details: { pid: 1 },
      cause: new Error('inner'),
    });
    const data = serializeError(error);
    expect(data).toMatchObject({
      name: 'RjobError',
      code: 'ERR_JOB_EXIT_CODE',
      exitCode: 3,
      signal: 'SIGTERM',
      timedOut: true,
      details: { pid: 1 },
      cause: { name: 'Error', message: 'inner' },
    });
    const revived = deserializeError(data) as RjobError;
    expect([revived.code, revived.exitCode, revived.signal, revived.timedOut]).toEqual([
      'ERR_JOB_EXIT_CODE',
      3,
      'SIGTERM',
      true,
    ]);
    expect(serializeError('plain')).toEqual({ name: 'Error', message: 'plain' });
  });
});
