/**
 * Every error rjob raises is an {@link RjobError} with a stable string `code`. Programs branch on
 * `code` (and on `exitCode`, `signal`, `timedOut` for failed jobs), never on message text.
 */

import { serializeError as serializeAnyError } from './runtime/serialize-error.js';
import { RuntimeErrorCode } from './runtime/work-values.js';

/** Stable error codes. Adding a code is a minor change; renaming or removing one is breaking. */
export const ErrorCode = {
  /** An argument is missing or malformed. */
  InvalidArgument: RuntimeErrorCode.InvalidArgument,
  /** No job matches the id, name or instance id given. */
  JobNotFound: 'ERR_JOB_NOT_FOUND',
  /** The verb needs a finished job (remove without force). */
  JobRunning: 'ERR_JOB_RUNNING',
  /** A state change that the job model does not allow. */
  InvalidStateTransition: 'ERR_INVALID_STATE_TRANSITION',
  /** No job type is registered under that name. */
  UnknownJobType: 'ERR_UNKNOWN_JOB_TYPE',
  /** A value cannot cross a thread, process or host boundary (functions, symbols, ...). */
  ValueNotCloneable: RuntimeErrorCode.ValueNotCloneable,
  /** A process job exited with a non-zero code. */
  JobExitCode: 'ERR_JOB_EXIT_CODE',
  /** A process job was ended by a signal it was not asked to take. */
  JobSignal: 'ERR_JOB_SIGNAL',
  /** The job's own code threw. */
  JobThrew: 'ERR_JOB_THREW',
  /** The thread or process running the job died unexpectedly. */
  JobCrashed: 'ERR_JOB_CRASHED',
  /** The job ran past its `timeoutMs`. */
  JobTimeout: 'ERR_JOB_TIMEOUT',
  /** The job ran past its memory limit. */
  JobOutOfMemory: 'ERR_JOB_OUT_OF_MEMORY',
  /** The job could not be started at all (bad command, missing module, ...). */
  JobStartFailed: 'ERR_JOB_START_FAILED',
  /** At least one child of a parent job failed. */
  ChildJobFailed: 'ERR_CHILD_JOB_FAILED',
  /** No agent answers at the address given (socket path, host). */
  AgentUnreachable: 'ERR_AGENT_UNREACHABLE',
  /** The manager was closed; it takes no new work. */
  ManagerClosed: 'ERR_MANAGER_CLOSED',
  /** A job failed with a reason that carries no code of its own (what a summary reports then). */
  JobFailed: 'ERR_JOB_FAILED',
  /** An error from the remote side that carried no code (its name is in `details.name`). */
  Remote: 'ERR_REMOTE',
  /** A remote job (RemoteJob) failed on its host; the host's reason is the cause. */
  RemoteJobFailed: 'ERR_REMOTE_JOB_FAILED',
  /** The verb needs a running job (`send` to a job that has not started or has finished). */
  JobNotRunning: 'ERR_JOB_NOT_RUNNING',
  /** The job takes no input: it was started without an open stdin, or its stdin was closed. */
  StdinClosed: 'ERR_STDIN_CLOSED',
  // Protocol and remoting codes are listed in docs/protocol.md and live beside the protocol code.
} as const;

export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode] | (string & {});

const BRAND = Symbol.for('rjob.error');

export interface RjobErrorOptions {
  cause?: unknown;
  /** Exit code of a process that ended with one. */
  exitCode?: number;
  /** Signal that ended a process. */
  signal?: string;
  /** True when the job hit its `timeoutMs`. */
  timedOut?: boolean;
  /** Extra machine-readable facts (job id, frame size, ...). */
  details?: Record<string, unknown>;
}

export class RjobError extends Error {
  override name = 'RjobError';
  readonly code: ErrorCodeValue;
  readonly exitCode?: number;
  readonly signal?: string;
  readonly timedOut?: boolean;
  readonly details?: Record<string, unknown>;

  constructor(code: ErrorCodeValue, message: string, options: RjobErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    if (options.exitCode !== undefined) this.exitCode = options.exitCode;
    if (options.signal !== undefined) this.signal = options.signal;
    if (options.timedOut !== undefined) this.timedOut = options.timedOut;
    if (options.details !== undefined) this.details = options.details;
    Object.defineProperty(this, BRAND, { value: true });
  }

  /**
   * Brand check that works across copies of @rjob/core (two versions in one tree, or an error
   * revived from the wire), where `instanceof` would not.
   */
  static is(value: unknown): value is RjobError {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
  }

  /** Same as {@link RjobError.is}, narrowed to one code. */
  static hasCode(value: unknown, code: ErrorCodeValue): value is RjobError {
    return RjobError.is(value) && value.code === code;
  }
}

/** Plain, cloneable shape of an error, for crossing threads, processes and the wire. */
export interface SerializedError {
  name: string;
  message: string;
  code?: string;
  stack?: string;
  exitCode?: number;
  signal?: string;
  timedOut?: boolean;
  details?: Record<string, unknown>;
  cause?: SerializedError;
}

/**
 * Turns any thrown value into a {@link SerializedError}, `exitCode`, `signal`, `timedOut` and
 * `details` included. Causes are kept to a depth of 8. (runtime/serialize-error.js: the JS-work
 * runtime, which cannot import TypeScript, uses the same function.)
 */
export const serializeError: (error: unknown, depth?: number) => SerializedError = serializeAnyError;

/** Revives a {@link SerializedError}: an {@link RjobError} when it carries a code. */
export function deserializeError(data: SerializedError): Error {
  const cause = data.cause ? deserializeError(data.cause) : undefined;
  const options: RjobErrorOptions = { cause };
  if (data.exitCode !== undefined) options.exitCode = data.exitCode;
  if (data.signal !== undefined) options.signal = data.signal;
  if (data.timedOut !== undefined) options.timedOut = data.timedOut;
  if (data.details !== undefined) options.details = data.details;
  const error = data.code
    ? new RjobError(data.code, data.message, options)
    : new Error(data.message, cause ? { cause } : undefined);
  if (data.name && data.name !== 'RjobError') error.name = data.name;
  if (data.stack) error.stack = data.stack;
  return error;
}

/** Wraps anything thrown into an {@link RjobError}, keeping an existing one as is. */
export function toRjobError(error: unknown, code: ErrorCodeValue, message?: string): RjobError {
  if (RjobError.is(error)) return error;
  const text = message ?? (error instanceof Error ? error.message : safeString(error));
  return new RjobError(code, text, { cause: error });
}

function safeString(value: unknown): string {
  try {
    return String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}
