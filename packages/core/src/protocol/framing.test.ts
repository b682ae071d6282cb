import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RjobError } from '../errors.js';
import {
  DEFAULT_FRAME_BUDGET_BYTES,
  DEFAULT_MAX_FRAME_BYTES,
  encodeFrame,
  FrameBudget,
  FrameDecoder,
} from './framing.js';

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

function expectCode(fn: () => unknown, code: string): RjobError {
  try {
    fn();
  } catch (error) {
    expect(RjobError.hasCode(error, code)).toBe(true);
    return error as RjobError;
  }
  throw new Error(`expected ${code}`);
}

describe('framing', () => {
  it('prefixes the body with a big-endian uint32 length', () => {
    const frame = encodeFrame(new Uint8Array([7, 8, 9]));
    expect([...frame]).toEqual([0, 0, 0, 3, 7, 8, 9]);
  });

  it('documents a 16 MiB default limit', () => {
    expect(DEFAULT_MAX_FRAME_BYTES).toBe(16 * 1024 * 1024);
    expect(new FrameDecoder().maxFrameBytes).toBe(DEFAULT_MAX_FRAME_BYTES);
  });

  it('refuses to encode empty or oversized bodies', () => {
    expectCode(() => encodeFrame(new Uint8Array(0)), 'ERR_FRAME_MALFORMED');
    expectCode(() => encodeFrame(new Uint8Array(11), { maxFrameBytes: 10 }), 'ERR_FRAME_TOO_LARGE');
    expect(encodeFrame(new Uint8Array(10), { maxFrameBytes: 10 }).byteLength).toBe(14);
    expectCode(() => new FrameDecoder({ maxFrameBytes: 0 }), 'ERR_INVALID_ARGUMENT');
  });

  it('decodes any sequence of frames cut at any chunk boundaries', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ minLength: 1, maxLength: 300 }), { maxLength: 20 }),
        fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 50 }),
        (bodies, cuts) => {
          const stream = concat(bodies.map((b) => encodeFrame(b)));
          const decoder = new FrameDecoder({ maxFrameBytes: 300 });
          const out: Uint8Array[] = [];
          let at = 0;
          let i = 0;
          while (at < stream.byteLength) {
            const size = cuts[i++ % cuts.length]!;
            out.push(...decoder.push(stream.subarray(at, at + size)));
            at += size;
          }
          decoder.end();
          expect(out).toEqual(bodies);
          expect(decoder.bufferedBytes).toBe(0);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('decodes byte by byte', () => {
    const bodies = [new Uint8Array([1]), new Uint8Array(1000).fill(5), new Uint8Array([2, 3])];
    const stream = concat(bodies.map((b) => encodeFrame(b)));
    const decoder = new FrameDecoder();
    const out: Uint8Array[] = [];
    for (const byte of stream) out.push(...decoder.push(new Uint8Array([byte])));
    expect(out).toEqual(bodies);
  });

  it('returns copies, not views of the caller chunk', () => {
    const chunk = encodeFrame(new Uint8Array([1, 2, 3]));
    const [frame] = new FrameDecoder().push(chunk);
    chunk.fill(0);
    expect([...frame!]).toEqual([1, 2, 3]);
  });

  it('rejects an oversized length as soon as the header is read, without buffering the body', () => {
    const decoder = new FrameDecoder({ maxFrameBytes: 1024 });
    expect(decoder.push(new Uint8Array([0, 0]))).toEqual([]);
    const error = expectCode(() => decoder.push(new Uint8Array([4, 1])), 'ERR_FRAME_TOO_LARGE');
    expect(error.details).toMatchObject({ frameBytes: 1025, maxFrameBytes: 1024 });
    expect(decoder.bufferedBytes).toBe(0);
    // The stream is out of sync for good.
    expectCode(() => decoder.push(encodeFrame(new Uint8Array([1]))), 'ERR_FRAME_TOO_LARGE');
    expectCode(() => decoder.end(), 'ERR_FRAME_TOO_LARGE');
  });

  it('rejects a 4 GiB length header with the default limit', () => {
    expectCode(
      () => new FrameDecoder().push(new Uint8Array([0xff, 0xff, 0xff, 0xff])),
      'ERR_FRAME_TOO_LARGE',
    );
  });

  it('rejects an empty frame', () => {
    expectCode(() => new FrameDecoder().push(new Uint8Array([0, 0, 0, 0])), 'ERR_FRAME_MALFORMED');
  });

  it('reports a stream that ends inside a frame as truncated', () => {
    const decoder = new FrameDecoder();
    decoder.push(encodeFrame(new Uint8Array(10)).subarray(0, 7));
    expectCode(() => decoder.end(), 'ERR_FRAME_TRUNCATED');
    const header = new FrameDecoder();
    header.push(new Uint8Array([0, 0]));
    expectCode(() => header.end(), 'ERR_FRAME_TRUNCATED');
    const clean = new FrameDecoder();
    clean.push(encodeFrame(new Uint8Array(3)));
    expect(() => clean.end()).not.toThrow();
  });

  it('accepts a frame of exactly maxFrameBytes', () => {
    const body = new Uint8Array(4096).fill(9);
    const frames = new FrameDecoder({ maxFrameBytes: 4096 }).push(encodeFrame(body, { maxFrameBytes: 4096 }));
    expect(frames).toEqual([body]);
  });
});

describe('FrameBudget', () => {
  it('caps the bytes of incomplete frames across decoders and gives them back', () => {
    const budget = new FrameBudget(100);
    const a = new FrameDecoder({ budget });
    const b = new FrameDecoder({ budget });
    const header = (n: number) => {
      const frame = encodeFrame(new Uint8Array(n));
      return { head: frame.subarray(0, 4 + n / 2), tail: frame.subarray(4 + n / 2) };
    };
    const fa = header(120);
    expect(a.push(fa.head)).toEqual([]);
    expect(budget.usedBytes).toBe(60);
    const fb = header(120);
    // b's half (60 bytes) does not fit next to a's 60: b fails, a is untouched.
    expectCode(() => b.push(fb.head), 'ERR_FRAME_BUDGET');
    expect(budget.usedBytes).toBe(60);
    // Completing a frame never fails, and releases what it held.
    expect(a.push(fa.tail).map((f) => f.byteLength)).toEqual([120]);
    expect(budget.usedBytes).toBe(0);
    expect(budget.peakBytes).toBe(60);
    // A disposed decoder gives its bytes back too.
    const c = new FrameDecoder({ budget });
    c.push(header(40).head);
    expect(budget.usedBytes).toBe(20);
    c.dispose();
    expect(budget.usedBytes).toBe(0);
    expectCode(() => c.push(new Uint8Array([1])), 'ERR_CHANNEL_CLOSED');
  });

  it('documents a 64 MiB default and refuses a bad limit', () => {
    expect(DEFAULT_FRAME_BUDGET_BYTES).toBe(64 * 1024 * 1024);
    expect(new FrameBudget().limitBytes).toBe(DEFAULT_FRAME_BUDGET_BYTES);
    expect(() => new FrameBudget(0)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }));
  });
});
