/** Value codec: v8.serialize vs msgpackr on the same structured-clone-heavy and plain values. */
import { deserialize, serialize } from 'node:v8';
import { Packr } from 'msgpackr';
import { type BenchResult, measure } from './harness.js';

const sample = {
  when: new Date(0),
  tags: new Map([
    ['a', 1],
    ['b', 2],
  ]),
  set: new Set([1, 2, 3]),
  big: 12345678901234567890n,
  bytes: new Uint8Array(64),
  error: new Error('boom'),
  nested: { list: [1, 'two', { three: 3 }], text: 'x'.repeat(100) },
};
const line = { stream: 'output', data: 'Output 12345: a typical line of text from a job', seq: 12345 };

export async function benchCodec(): Promise<BenchResult[]> {
  const packr = new Packr({ structuredClone: true, moreTypes: true, useRecords: false });
  const results: BenchResult[] = [];
  for (const [label, value] of [
    ['rich value', sample],
    ['record line', line],
  ] as const) {
    const v8 = await measure(`codec ${label}: v8.serialize round trip`, 20_000, () =>
      deserialize(serialize(value)),
    );
    const mp = await measure(`codec ${label}: msgpackr round trip`, 20_000, () =>
      packr.unpack(packr.pack(value)),
    );
    results.push(v8, { ...mp, baseline: v8.name, ratio: mp.meanMs / v8.meanMs });
  }
  const back = packr.unpack(packr.pack(sample)) as typeof sample;
  console.log(
    `  fidelity: msgpackr Error → ${back.error instanceof Error ? 'Error' : typeof back.error}, BigInt → ${typeof back.big}, Map → ${back.tags instanceof Map}; v8: all kept`,
  );
  return results;
}
