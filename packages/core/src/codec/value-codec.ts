import { deserialize, serialize } from 'node:v8';
import { ErrorCode, RjobError } from '../errors.js';

/**
 * Encodes a value with structured-clone fidelity (Date, Map, Set, BigInt, typed arrays, Buffer,
 * Error with cause, nested and cyclic objects) for crossing a process or host boundary.
 * v8.serialize was chosen over msgpackr after measuring both: see docs/decisions.md.
 *
 * Throws ERR_VALUE_NOT_CLONEABLE, naming where the offending value sits, for functions, symbols
 * and other values that cannot cross.
 */
export function encodeValue(value: unknown): Buffer {
  try {
    return serialize(value);
  } catch (error) {
    throw notCloneable(value, error);
  }
}

export function decodeValue<T = unknown>(bytes: Uint8Array): T {
  return deserialize(bytes) as T;
}

/** Builds the coded error for a value that failed to clone, with the path to the culprit. */
export function notCloneable(value: unknown, cause?: unknown): RjobError {
  const found = findUncloneable(value);
  const where = found ? ` at ${found.path || '(root)'}` : '';
  const what = found ? describe(found.value) : 'a value';
  return new RjobError(
    ErrorCode.ValueNotCloneable,
    `Cannot send ${what}${where} across the job boundary: functions, symbols and similar values do not cross. Send data instead.`,
    { cause, details: found ? { path: found.path } : {} },
  );
}

function describe(value: unknown): string {
  if (typeof value === 'function') return `function ${value.name || '(anonymous)'}`;
  if (typeof value === 'symbol') return value.toString();
  return Object.prototype.toString.call(value);
}

/** Depth-first search for the first value structured clone refuses. Only runs on failure. */
export function findUncloneable(
  value: unknown,
  path = '',
  seen = new Set<unknown>(),
): { path: string; value: unknown } | undefined {
  if (typeof value === 'function' || typeof value === 'symbol') return { path, value };
  if (value === null || typeof value !== 'object' || seen.has(value)) return undefined;
  seen.add(value);
  if (value instanceof Map) {
    let i = 0;
    for (const [k, v] of value) {
      const hit =
        findUncloneable(k, `${path}<key ${i}>`, seen) ?? findUncloneable(v, `${path}.get(${i})`, seen);
      if (hit) return hit;
      i++;
    }
    return undefined;
  }
  if (value instanceof Set) {
    let i = 0;
    for (const v of value) {
      const hit = findUncloneable(v, `${path}<item ${i++}>`, seen);
      if (hit) return hit;
    }
    return undefined;
  }
  if (ArrayBuffer.isView(value) || value instanceof Date || value instanceof RegExp) return undefined;
  for (const key of Object.keys(value)) {
    const segment = Array.isArray(value) ? `[${key}]` : `.${key}`;
    const hit = findUncloneable((value as Record<string, unknown>)[key], path + segment, seen);
    if (hit) return hit;
  }
  return undefined;
}
