/**
 * `job.get`, `job.wait`, `job.stop`, `job.remove`, `job.suspend`, `job.resume`, `job.send`: the
 * session's jobs as they are, and what a client does to them.
 */
import { type GetFilter, type Job, type JobManager, JobState, type WireSelector } from '@rjob/core';
import {
  invalidParams,
  objectParams,
  optionalBoolean,
  optionalNonNegative,
  optionalString,
  wireSelector,
} from '../wire.js';
import type { MethodTable } from './context.js';

export const jobControlMethods: MethodTable = {
  'job.get': (scope, { params }) => scope.jobs.get(getFilter(params)).map(scope.info),
  'job.wait': (scope, { method, params }) => {
    const p = objectParams(params, method);
    const any = optionalBoolean(p, 'any');
    const timeoutMs = optionalNonNegative(p, 'timeoutMs');
    return scope.jobs
      .wait(scope.select(wireSelector(p.selector)), {
        ...(any === undefined ? {} : { any }),
        ...(timeoutMs === undefined ? {} : { timeoutMs }),
      })
      .then(async (jobs) => {
        // Finished includes persisted: a job Wait-Job returned survives an agent crash as is.
        await scope.records.settled(jobs);
        return jobs.map(scope.info);
      });
  },
  'job.stop': (scope, { method, params }) => {
    const p = objectParams(params, method);
    return scope.jobs.stop(scope.select(wireSelector(p.selector))).then((jobs) => jobs.map(scope.info));
  },
  'job.remove': (scope, { method, params }) => {
    const p = objectParams(params, method);
    const force = optionalBoolean(p, 'force');
    return scope.jobs
      .remove(scope.select(wireSelector(p.selector)), force === undefined ? {} : { force })
      .then(async (jobs) => {
        const infos = jobs.map(scope.info);
        await scope.records.forget(jobs);
        return infos.map((info) => ({ ...info, hasMoreData: false }));
      });
  },
  'job.suspend': (scope, { method, params }) => {
    const p = objectParams(params, method);
    return scope.jobs.suspend(scope.select(wireSelector(p.selector))).map(scope.info);
  },
  'job.resume': (scope, { method, params }) => {
    const p = objectParams(params, method);
    return scope.jobs.continueJobs(scope.select(wireSelector(p.selector))).map(scope.info);
  },
  'job.send': (scope, { params }) => sendInput(scope.jobs, params, scope.select).then(scope.info),
};

// ---- params ------------------------------------------------------------------------------------

function stringList(value: unknown, key: string): string[] | undefined {
  if (value === undefined) return undefined;
  if (Array.isArray(value) && value.every((item) => typeof item === 'string')) return value as string[];
  throw invalidParams(`${key} must be a list of strings.`);
}

const JOB_STATES = new Set<string>(Object.values(JobState) as string[]);

/** The params of `job.get`: which jobs to list (all when absent). */
function getFilter(params: unknown): GetFilter {
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

/** The most bytes one `job.send` carries (a client sends more in several). */
const MAX_SEND_BYTES = 4 * 1024 * 1024;

/** `job.send`: writes to one running job's stdin (see rpc.ts). */
async function sendInput(
  jobs: JobManager,
  params: unknown,
  select: (selector: WireSelector) => Job[],
): Promise<Job> {
  const p = objectParams(params, 'job.send');
  const selected = select(wireSelector(p.selector));
  if (selected.length !== 1) {
    throw invalidParams(`job.send writes to one job; ${selected.length} match.`, {
      jobIds: selected.map((job) => job.id),
    });
  }
  const data = p.data;
  if (data !== undefined && typeof data !== 'string' && !(data instanceof Uint8Array)) {
    throw invalidParams('job.send: data must be a string or bytes.');
  }
  if (data !== undefined && data.length > MAX_SEND_BYTES) {
    throw invalidParams(`job.send: at most ${MAX_SEND_BYTES} bytes at once.`);
  }
  const end = optionalBoolean(p, 'end');
  return jobs.writeInput(selected[0]!, data, end === undefined ? {} : { end });
}
