// @ts-check
/**
 * The JS-work runtime's values (work-runner.js): loading the work a run names (a function's source,
 * a module's export, generator code), what a value is (a promise, an iterator), and the path of a
 * value that cannot be cloned. Plain ESM with JSDoc types, importing only `node:` built-ins, like
 * work-runner.js: workers and children load it without a build step.
 */

/** @typedef {import('./work-runner.js').WorkSpec} WorkSpec */

/**
 * The codes the runtime raises, from core's `ErrorCode` table (errors.ts takes them from here: this
 * file cannot import TypeScript).
 */
export const RuntimeErrorCode = /** @type {const} */ ({
  InvalidArgument: 'ERR_INVALID_ARGUMENT',
  ValueNotCloneable: 'ERR_VALUE_NOT_CLONEABLE',
});

const AsyncGeneratorFunction = /** @type {new (...args: string[]) => (...args: unknown[]) => unknown} */ (
  Object.getPrototypeOf(async function* () {}).constructor
);

/** Compiled functions by source: a warm worker compiles the same job once. */
const compiled = new Map();
const MAX_COMPILED = 256;

/**
 * @param {WorkSpec} spec
 * @returns {Promise<(...args: unknown[]) => unknown>}
 */
export async function resolveWork(spec) {
  if (spec.kind === 'fn') return compile('fn', spec.source, () => evaluateFunction(spec.source));
  if (spec.kind === 'eval')
    return compile('eval', spec.code, () => new AsyncGeneratorFunction('ctx', 'args', spec.code));
  if (spec.kind === 'module') {
    const exportName = spec.exportName ?? 'default';
    const namespace = await import(spec.specifier);
    const work = namespace[exportName];
    if (typeof work !== 'function') {
      throw codedError(
        RuntimeErrorCode.InvalidArgument,
        `Export "${exportName}" of ${spec.specifier} is ${work === undefined ? 'missing' : `a ${typeof work}, not a function`}.`,
      );
    }
    return work;
  }
  throw codedError(
    RuntimeErrorCode.InvalidArgument,
    `Unknown work kind: ${String(/** @type {any} */ (spec).kind)}.`,
  );
}

/**
 * @param {string} kind
 * @param {string} text
 * @param {() => any} make
 */
function compile(kind, text, make) {
  const key = `${kind}\0${text}`;
  let fn = compiled.get(key);
  if (fn === undefined) {
    fn = make();
    if (compiled.size >= MAX_COMPILED) compiled.delete(compiled.keys().next().value);
    compiled.set(key, fn);
  }
  if (kind === 'eval') {
    // eval code sees `args` as an array, not spread.
    const body = fn;
    return (/** @type {unknown} */ ctx, /** @type {unknown[]} */ ...args) => body(ctx, args);
  }
  return fn;
}

/** @param {string} source */
function evaluateFunction(source) {
  if (/\{\s*\[native code\]\s*\}\s*$/.test(source)) {
    throw codedError(
      RuntimeErrorCode.InvalidArgument,
      'A native or bound function cannot be sent to a job; pass a function written in JavaScript.',
    );
  }
  // Running the job's own code is the point; indirect eval keeps it in the global scope, away from
  // this module's variables.
  // biome-ignore lint/security/noGlobalEval: evaluating the job's source is this runtime's purpose
  const indirectEval = eval;
  let value;
  try {
    value = indirectEval(`(${source}\n)`);
  } catch (error) {
    if (!(error instanceof SyntaxError)) throw error;
    // Method shorthand (`run(ctx) { ... }`) is not an expression on its own.
    try {
      const holder = indirectEval(`({${source}\n})`);
      value = Object.values(holder)[0];
    } catch {
      throw error;
    }
  }
  if (typeof value !== 'function') {
    throw codedError(
      RuntimeErrorCode.InvalidArgument,
      `The job's fn source evaluates to a ${typeof value}, not a function.`,
    );
  }
  return value;
}

/**
 * Finds where a value stops being structured-cloneable, for a message a person can act on.
 * @param {unknown} value
 * @param {string} path
 * @param {Set<object>} seen
 * @returns {{ path: string, description: string } | undefined}
 */
export function findUncloneable(value, path, seen) {
  if (typeof value === 'function') return { path, description: `a function (${value.name || 'anonymous'})` };
  if (typeof value === 'symbol') return { path, description: `a symbol (${value.toString()})` };
  if (value === null || typeof value !== 'object' || seen.has(value)) return undefined;
  seen.add(value);
  if (value instanceof WeakMap || value instanceof WeakSet || value instanceof WeakRef) {
    return { path, description: `a ${value.constructor.name}` };
  }
  if (value instanceof Promise) return { path, description: 'a Promise' };
  if (value instanceof Map) {
    let index = 0;
    for (const [key, item] of value) {
      const found =
        findUncloneable(key, `${path}<map key ${index}>`, seen) ??
        findUncloneable(item, `${path}.get(${describeKey(key)})`, seen);
      if (found) return found;
      index++;
    }
    return undefined;
  }
  if (value instanceof Set) {
    let index = 0;
    for (const item of value) {
      const found = findUncloneable(item, `${path}<set item ${index++}>`, seen);
      if (found) return found;
    }
    return undefined;
  }
  if (ArrayBuffer.isView(value) || value instanceof Date || value instanceof RegExp) return undefined;
  for (const key of Object.keys(value)) {
    const childPath = Array.isArray(value) ? `${path}[${key}]` : `${path}.${key}`;
    const found = findUncloneable(/** @type {Record<string, unknown>} */ (value)[key], childPath, seen);
    if (found) return found;
  }
  return undefined;
}

/** @param {unknown} key */
function describeKey(key) {
  return typeof key === 'string' ? JSON.stringify(key) : String(key);
}

/**
 * @param {unknown} value
 * @returns {value is PromiseLike<unknown>}
 */
export function isThenable(value) {
  return (
    value !== null && typeof value === 'object' && typeof (/** @type {any} */ (value).then) === 'function'
  );
}

/**
 * An iterator or generator (something to stream), as opposed to a value that happens to be iterable
 * (an array, a Map, a string).
 * @param {unknown} value
 */
export function isIterator(value) {
  if (value === null || typeof value !== 'object') return false;
  const v = /** @type {any} */ (value);
  if (typeof v[Symbol.asyncIterator] === 'function') return true;
  return typeof v.next === 'function' && typeof v[Symbol.iterator] === 'function';
}

/**
 * @param {string} code
 * @param {string} message
 */
export function codedError(code, message) {
  return Object.assign(new Error(message), { code });
}
