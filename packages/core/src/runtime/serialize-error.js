// @ts-check
/**
 * The one serializer of errors (what @rjob/core exports as `serializeError`). Plain JS importing
 * nothing: the JS-work runtime (work-runner.js), which runs in workers and children without a build
 * step, uses it too, so a job's failure keeps `exitCode`, `signal` and `timedOut` on every path.
 */

/**
 * @typedef {{ name: string, message: string, code?: string, stack?: string, exitCode?: number,
 *   signal?: string, timedOut?: boolean, details?: Record<string, unknown>,
 *   cause?: SerializedErrorData }} SerializedErrorData
 */

const BRAND = Symbol.for('rjob.error');

/**
 * Turns any thrown value into a plain, cloneable error. Causes are kept to a depth of 8.
 * @param {unknown} error
 * @param {number} [depth]
 * @returns {SerializedErrorData}
 */
export function serializeError(error, depth = 0) {
  const branded =
    typeof error === 'object' &&
    error !== null &&
    /** @type {Record<symbol, unknown>} */ (error)[BRAND] === true;
  if (!(error instanceof Error) && !branded) {
    return { name: 'Error', message: typeof error === 'string' ? error : safeString(error) };
  }
  const e =
    /** @type {Error & { code?: unknown, exitCode?: unknown, signal?: unknown, timedOut?: unknown, details?: unknown }} */ (
      error
    );
  /** @type {SerializedErrorData} */
  const out = { name: e.name, message: e.message };
  if (typeof e.code === 'string') out.code = e.code;
  if (e.stack) out.stack = e.stack;
  if (typeof e.exitCode === 'number') out.exitCode = e.exitCode;
  if (typeof e.signal === 'string') out.signal = e.signal;
  if (typeof e.timedOut === 'boolean') out.timedOut = e.timedOut;
  if (e.details && typeof e.details === 'object')
    out.details = /** @type {Record<string, unknown>} */ (e.details);
  if (e.cause !== undefined && depth < 8) out.cause = serializeError(e.cause, depth + 1);
  return out;
}

/**
 * `String(value)`, or its tag when that throws.
 * @param {unknown} value
 */
function safeString(value) {
  try {
    return String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}
