/**
 * Conversions between the agent's objects and the shapes of the session RPC contract
 * (`@rjob/core`'s session/rpc.ts), and checks on the params a client sends: payloads are not
 * schema-checked by the protocol layer, so every method checks its own before use.
 */
import {
  ErrorCode,
  type GetFilter,
  type Job,
  type JobInfo,
  JobState,
  RjobError,
  serializeError,
  type GroupChildRequest,
  type GroupRequest,
  type WireSelector,
  type WorkRequest,
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

function isSelectorItem(value: unknown): value is number | string {
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

function stringList(value: unknown, key: string): string[] | undefined {
  if (value === undefined) return undefined;
  if (Array.isArray(value) && value.every((item) => typeof item === 'string')) return value as string[];
  throw invalidParams(`${key} must be a list of strings.`);
}

const JOB_STATES = new Set<string>(Object.values(JobState) as string[]);

export function getFilter(params: unknown): GetFilter {
  const p = objectParams(params, 'job.get', true);
  const filter: GetFilter = {};
  if (p.ids !== undefined) {
    if (!Array.isArray(p.ids) || !p.ids.every((id) => Number.isSafeInteger(id))) {
      throw invalidParams('ids must be a list of job ids.');
    }
    filter.ids = p.ids as number[];
  }
  const names = stringList(p.names, 'names');
  if (names) filter.names = names;
  const instanceIds = stringList(p.instanceIds, 'instanceIds');
  if (instanceIds) filter.instanceIds = instanceIds;
  if (p.state !== undefined) {
    const states = [p.state].flat();
    if (!states.every((state) => typeof state === 'string' && JOB_STATES.has(state))) {
      throw invalidParams('state must be a job state or a list of them.');
    }
    filter.state = p.state as GetFilter['state'];
  }
  const type = optionalString(p, 'type', 256);
  if (type !== undefined) filter.type = type;
  const command = optionalString(p, 'command');
  if (command !== undefined) filter.command = command;
  const includeChildren = optionalBoolean(p, 'includeChildren');
  if (includeChildren !== undefined) filter.includeChildren = includeChildren;
  return filter;
}

export function workRequest(params: unknown, method: string): WorkRequest {
  const p = objectParams(params, method);
  const type = optionalString(p, 'type', 256);
  const name = optionalString(p, 'name', 256);
  const requestKey = optionalString(p, 'requestKey', 256);
  const label = optionalString(p, 'label', 1024);
  if (!isPlainObject(p.definition)) throw invalidParams(`${method} needs a definition object.`);
  const request: WorkRequest = { definition: p.definition };
  if (type !== undefined) request.type = type;
  if (name !== undefined) request.name = name;
  if (requestKey !== undefined) request.requestKey = requestKey;
  if (label !== undefined) request.label = label;
  const group = optionalString(p, 'group', 64);
  if (group !== undefined) request.group = group;
  if (p.after !== undefined) {
    if (
      !Array.isArray(p.after) ||
      p.after.length === 0 ||
      p.after.length > MAX_AFTER ||
      !p.after.every(isSelectorItem)
    ) {
      throw invalidParams(`${method}: after must list 1 to ${MAX_AFTER} job ids or names.`);
    }
    request.after = p.after;
  }
  return request;
}

/** The most jobs one job may wait for. */
const MAX_AFTER = 1000;

/** As many children as one group may have: far above any fan-out, far below what hurts the agent. */
const MAX_GROUP_CHILDREN = 10_000;

export function groupRequest(params: unknown): GroupRequest {
  const method = 'job.startGroup';
  const p = objectParams(params, method);
  if (!Array.isArray(p.children) || p.children.length === 0 || p.children.length > MAX_GROUP_CHILDREN) {
    throw invalidParams(`${method} needs children: a list of 1 to ${MAX_GROUP_CHILDREN} work requests.`);
  }
  const children = p.children.map((child): GroupChildRequest => {
    const out: GroupChildRequest = workRequest(child, `${method} child`);
    const c = child as Record<string, unknown>;
    const location = optionalString(c, 'location', 1024);
    const typeName = optionalString(c, 'typeName', 256);
    const command = optionalString(c, 'command');
    if (location !== undefined) out.location = location;
    if (typeName !== undefined) out.typeName = typeName;
    if (command !== undefined) out.command = command;
    return out;
  });
  const request: GroupRequest = { children };
  const name = optionalString(p, 'name', 256);
  const type = optionalString(p, 'type', 256);
  const command = optionalString(p, 'command');
  const location = optionalString(p, 'location');
  const throttleLimit = optionalNonNegative(p, 'throttleLimit');
  if (throttleLimit !== undefined && (!Number.isSafeInteger(throttleLimit) || throttleLimit < 1)) {
    throw invalidParams('throttleLimit must be a positive whole number.');
  }
  if (name !== undefined) request.name = name;
  if (type !== undefined) request.type = type;
  if (command !== undefined) request.command = command;
  if (location !== undefined) request.location = location;
  if (throttleLimit !== undefined) request.throttleLimit = throttleLimit;
  return request;
}
