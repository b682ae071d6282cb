/**
 * `job.start`, `job.startGroup`, `job.restart`: new jobs in the session, from work requests (also
 * `invoke`'s job, see subscription.ts).
 */
import {
  ErrorCode,
  type GroupChildRequest,
  type GroupRequest,
  type Job,
  type JobInfo,
  type JobManager,
  RjobError,
  type WorkRequest,
} from '@rjob/core';
import { type JobWork, rememberWork, workOf } from '../job-work.js';
import { queuedStart } from '../queued-start.js';
import {
  invalidParams,
  isPlainObject,
  isSelectorItem,
  objectParams,
  optionalNonNegative,
  optionalString,
  wireSelector,
} from '../wire.js';
import type { MethodTable, SessionScope } from './context.js';

export const jobStartMethods: MethodTable = {
  'job.start': (scope, { params }) => start(scope, params),
  'job.startGroup': (scope, { params }) => startGroup(scope, params),
  'job.restart': (scope, { params }) => restart(scope, params),
};

async function start(scope: SessionScope, params: unknown): Promise<JobInfo> {
  const request = workRequest(params, 'job.start');
  const keys = startedByKey(scope.jobs);
  const known = request.requestKey === undefined ? undefined : keys.get(request.requestKey);
  if (known) return scope.info(await known);
  const starting = startWork(scope, params, 'job.start');
  if (request.requestKey !== undefined) {
    keys.set(request.requestKey, starting);
    starting.catch(() => keys.delete(request.requestKey!));
    // Bounded: a key matters only for the moments a client may repeat its request.
    if (keys.size > START_KEYS_KEPT) keys.delete(keys.keys().next().value!);
  }
  return scope.info(await starting);
}

/**
 * A parent with one child per request (JobManager.startGroup). Children's types resolve as
 * job.start's do (`process` by default); each child gets its own spool, so receiving the parent
 * reads its children's records. After an agent restart the group comes back whole (see
 * restore-jobs.ts).
 */
async function startGroup(scope: SessionScope, params: unknown): Promise<JobInfo> {
  const request = groupRequest(params);
  const parent = scope.jobs.startGroup({
    ...(request.name === undefined ? {} : { name: request.name }),
    ...(request.type === undefined ? {} : { type: request.type }),
    ...(request.command === undefined ? {} : { command: request.command }),
    ...(request.location === undefined ? {} : { location: request.location }),
    ...(request.throttleLimit === undefined ? {} : { throttleLimit: request.throttleLimit }),
    children: request.children.map((child) => ({
      type: child.type ?? 'process',
      definition: child.definition,
      ...(child.name === undefined ? {} : { name: child.name }),
      ...(child.location === undefined ? {} : { location: child.location }),
      ...(child.typeName === undefined ? {} : { typeName: child.typeName }),
      ...(child.command === undefined ? {} : { command: child.command }),
    })),
  });
  try {
    await scope.records.track(parent, { type: 'group', definition: request });
  } catch (error) {
    // As for job.start: a group whose records have nowhere to go must not run unseen.
    await scope.jobs.remove(parent, { force: true }).catch(() => {});
    throw error;
  }
  scope.watchState(parent);
  return scope.info(parent);
}

/** Starts the work a request (`job.start`, `invoke`, `job.restart`) describes: now, or queued. */
export async function startWork(scope: SessionScope, params: unknown, method: string): Promise<Job> {
  const request = workRequest(params, method);
  const work: JobWork = { type: request.type ?? 'process', definition: request.definition };
  if (request.label !== undefined) work.label = request.label;
  if (request.after !== undefined || request.group !== undefined) {
    // Checked before anything starts: an unknown job or group refuses the start.
    if (request.after !== undefined) work.after = scope.select(request.after).map((job) => job.id);
    if (request.group !== undefined) {
      scope.queue.checkGroup(request.group);
      work.group = request.group;
    }
    return queuedStart({
      jobs: scope.jobs,
      queue: scope.queue,
      records: scope.records,
      work,
      ...(request.name === undefined ? {} : { name: request.name }),
      watch: (job) => scope.watchState(job),
    });
  }
  const job = await scope.jobs.start(
    request.type ?? 'process',
    request.definition,
    request.name === undefined ? {} : { name: request.name },
  );
  rememberWork(job, work);
  try {
    // The job store keeps this as the job's data: a restarted agent has the label and definition.
    await scope.records.track(job, work);
  } catch (error) {
    // A job whose records have nowhere to go must not run unseen.
    await scope.jobs.remove(job, { force: true }).catch(() => {});
    throw error;
  }
  scope.watchState(job);
  return job;
}

/** `job.restart`: each finished job's work started again as a new job (see rpc.ts). */
async function restart(scope: SessionScope, params: unknown): Promise<JobInfo[]> {
  const p = objectParams(params, 'job.restart');
  const jobs = scope.select(wireSelector(p.selector));
  // Every job is checked before any starts, so a refusal starts nothing.
  for (const job of jobs) {
    if (!job.finished) {
      throw new RjobError(
        ErrorCode.JobRunning,
        `Job ${job.id} (${job.name}) is ${job.state}; it can be restarted once finished.`,
        {
          details: { id: job.id, state: job.state },
        },
      );
    }
    if (!workOf(job))
      throw invalidParams(`Job ${job.id} (${job.name}) cannot be restarted: its definition is not kept.`, {
        id: job.id,
      });
  }
  const started: JobInfo[] = [];
  for (const job of jobs) {
    const work = workOf(job)!;
    const request = {
      type: work.type,
      definition: work.definition,
      name: job.name,
      ...(work.label === undefined ? {} : { label: work.label }),
      // Again in its group (its dependencies were met or failed once; they are not waited for).
      ...(work.group === undefined ? {} : { group: work.group }),
    };
    started.push(scope.info(await startWork(scope, request, 'job.restart')));
  }
  return started;
}

/** Start keys remembered per job table (a host's views share their host's). */
const START_KEYS_KEPT = 4096;
const startKeys = new WeakMap<JobManager, Map<string, Promise<Job>>>();

function startedByKey(jobs: JobManager): Map<string, Promise<Job>> {
  let keys = startKeys.get(jobs);
  if (!keys) startKeys.set(jobs, (keys = new Map()));
  return keys;
}

// ---- params ------------------------------------------------------------------------------------

/** The most jobs one job may wait for. */
const MAX_AFTER = 1000;

/** As many children as one group may have: far above any fan-out, far below what hurts the agent. */
const MAX_GROUP_CHILDREN = 10_000;

/** The params of `job.start`, `invoke` and a group's child: what to run, and how it is known. */
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

/** The params of `job.startGroup`: the parent, and one work request per child. */
function groupRequest(params: unknown): GroupRequest {
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
