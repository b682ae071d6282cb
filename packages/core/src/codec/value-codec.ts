import { deserialize, serialize } from 'node:v8';
import { ErrorCode, RjobError } from '../errors.js';
// The runtime's walk, so the message is the same whether a value fails in a worker or here.
import { findUncloneable } from '../runtime/work-values.js';

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
  const found = findUncloneable(value, 'value', new Set());
  const what = found ? `${found.path} is ${found.description}` : 'the value cannot be cloned';
  return new RjobError(
    ErrorCode.ValueNotCloneable,
    `Cannot send this across the job boundary: ${what}. Functions, symbols and similar values do not cross; send data instead.`,
    { cause, details: found ? { path: found.path } : {} },
  );
}
