import { describe, expect, it } from 'vitest';
import { ErrorCode, RjobError } from '../errors.js';
import { decodeValue, encodeValue } from './value-codec.js';

describe('value codec', () => {
  it('keeps Date, Map, Set, BigInt, typed arrays, Buffer, Error with cause and cycles', () => {
    const cyclic: Record<string, unknown> = { name: 'loop' };
    cyclic.self = cyclic;
    const value = {
      when: new Date(1_700_000_000_000),
      map: new Map<unknown, unknown>([[1, { deep: [1n, 'x'] }]]),
      set: new Set(['a', 'b']),
      big: 2n ** 70n,
      floats: new Float64Array([1.5, -2]),
      buffer: Buffer.from('hi'),
      error: new TypeError('boom', { cause: new Error('inner') }),
      cyclic,
    };
    const back = decodeValue<typeof value>(encodeValue(value));
    expect(back.when).toEqual(value.when);
    expect(back.map.get(1)).toEqual({ deep: [1n, 'x'] });
    expect([...back.set]).toEqual(['a', 'b']);
    expect(back.big).toBe(2n ** 70n);
    expect(back.floats).toBeInstanceOf(Float64Array);
    expect([...back.floats]).toEqual([1.5, -2]);
    expect(Buffer.isBuffer(back.buffer) && back.buffer.toString()).toBe('hi');
    expect(back.error).toBeInstanceOf(TypeError);
    expect(back.error.message).toBe('boom');
    expect((back.error.cause as Error).message).toBe('inner');
    expect(back.cyclic.self).toBe(back.cyclic);
  });

  it('refuses a function with a coded error naming where it sits', () => {
    const error = (() => {
      try {
        encodeValue({ config: { retry: 3, onDone: function notify() {} } });
      } catch (e) {
        return e;
      }
    })();
    expect(RjobError.hasCode(error, ErrorCode.ValueNotCloneable)).toBe(true);
    expect((error as RjobError).message).toContain('value.config.onDone is a function (notify)');
    expect((error as RjobError).details).toEqual({ path: 'value.config.onDone' });
  });

  it('refuses a symbol inside a Map', () => {
    expect(() => encodeValue(new Map([['k', Symbol('s')]]))).toThrowError(
      expect.objectContaining({
        code: ErrorCode.ValueNotCloneable,
        message: expect.stringContaining('a symbol'),
      }),
    );
  });
});
