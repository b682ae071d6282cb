/**
 * Conversions between the agent's objects and the shapes of the session RPC contract
 * (`@rjob/core`'s session/rpc.ts), and the checks every method family shares on the params a
 * client sends: payloads are not schema-checked by the protocol layer, so every method checks its
 * own before use (methods/*.ts, each beside its handler).
 */
import {
  ErrorCode,
  type Job,
  type JobInfo,
  type JobManager,
  RjobError,
  serializeError,
  type WireSelector,
} from '@rjob/core';

export function toJobInfo(job: Job, hasMoreData = job.hasMoreData): JobInfo {
  const info: JobInfo = {
    id: job.id,
    instanceId: job.instanceId,
    name: job.name,
    type: job.type,
    state: job.state,
    hasMoreData,
    location: job.location,
    command: job.command,
    childIds: job.children.map((child) => child.id),
  };
  if (job.reason) info.reason = serializeError(job.reason);
  if (job.beginTime) info.beginTimeMs = job.beginTime.getTime();
  if (job.endTime) info.endTimeMs = job.endTime.getTime();
  return info;
}

export function invalidParams(message: string, details?: Record<string, unknown>): RjobError {
  return new RjobError(ErrorCode.InvalidArgument, message, details ? { details } : {});
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** Params that must be an object (or absent, when `optional`). */
export function objectParams(params: unknown, method: string, optional = false): Record<string, unknown> {
  if (params === undefined && optional) return {};
  if (!isPlainObject(params)) throw invalidParams(`${method} needs an object of params.`);
  return params;
}

const MAX_SELECTOR_ITEMS = 10_000;

/** One item of a selector: a job id, or a name or instance id (a name may have `*` and `?`). */
export function isSelectorItem(value: unknown): value is number | string {
  return (
    (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) ||
    (typeof value === 'string' && value.length > 0 && value.length <= 1024)
  );
}

export function wireSelector(value: unknown): WireSelector {
  if (isSelectorItem(value)) return value;
  if (
    Array.isArray(value) &&
    value.length > 0 &&
    value.length <= MAX_SELECTOR_ITEMS &&
    value.every(isSelectorItem)
  ) {
    return value;
  }
  throw invalidParams('selector must be a job id, a name, an instance id, or a non-empty list of them.');
}

export function optionalBoolean(params: Record<string, unknown>, key: string): boolean | undefined {
  const value = params[key];
  if (value === undefined || typeof value === 'boolean') return value;
  throw invalidParams(`${key} must be a boolean.`);
}

export function optionalString(
  params: Record<string, unknown>,
  key: string,
  maxChars = 4096,
): string | undefined {
  const value = params[key];
  if (value === undefined) return undefined;
  if (typeof value === 'string' && value.length <= maxChars) return value;
  throw invalidParams(`${key} must be a string of at most ${maxChars} characters.`);
}

export function optionalNonNegative(params: Record<string, unknown>, key: string): number | undefined {
  const value = params[key];
  if (value === undefined) return undefined;
  if (typeof value === 'number' && Number.isFinite(value) && value >= 0) return value;
  throw invalidParams(`${key} must be a non-negative number.`);
}

export function requiredString(params: Record<string, unknown>, key: string, maxChars = 256): string {
  const value = params[key];
  if (typeof value === 'string' && value.length > 0 && value.length <= maxChars) return value;
  throw invalidParams(`${key} must be a non-empty string of at most ${maxChars} characters.`);
}

/** Resolves a wire selector as JobManager does, so subscriptions hold the jobs themselves. */
export function selectJobs(jobs: JobManager, selector: WireSelector): Job[] {
  const items = Array.isArray(selector) ? selector : [selector];
  const out = new Set<Job>();
  for (const item of items) {
    if (typeof item === 'number' || /^\d+$/.test(item)) {
      out.add(jobs.job(item));
      continue;
    }
    const byInstance = jobs.get({ instanceIds: [item], includeChildren: true });
    const top = jobs.get({ names: [item] });
    const matches =
      byInstance.length > 0
        ? byInstance
        : top.length > 0
          ? top
          : jobs.get({ names: [item], includeChildren: true });
    // No match and no wildcard: let the manager raise its ERR_JOB_NOT_FOUND.
    if (matches.length === 0 && !/[*?]/.test(item)) jobs.job(item);
    for (const job of matches) out.add(job);
  }
  return [...out];
}
