/** Which jobs a job manager's selector or filter names. */
import { ErrorCode, RjobError } from '../errors.js';
import { Job } from './job.js';
import type { GetFilter, JobSelector } from './job-manager-options.js';

/**
 * The jobs `filter` keeps (JobManager.get), newest last; `typeName` turns a type alias into the
 * type's name.
 */
export function filterJobs(
  jobs: ReadonlyMap<number, Job>,
  filter: GetFilter,
  typeName: (nameOrAlias: string) => string,
): Job[] {
  const states = filter.state === undefined ? undefined : [filter.state].flat();
  const type = filter.type === undefined ? undefined : typeName(filter.type);
  const names = filter.names?.map(wildcard);
  const command = filter.command === undefined ? undefined : wildcard(filter.command);
  const out: Job[] = [];
  for (const job of allJobs(jobs, filter.includeChildren ?? false)) {
    if (filter.ids && !filter.ids.includes(job.id)) continue;
    if (filter.instanceIds && !filter.instanceIds.includes(job.instanceId)) continue;
    if (names && !names.some((re) => re.test(job.name))) continue;
    if (states && !states.includes(job.state)) continue;
    if (type && job.type.toLowerCase() !== type) continue;
    if (command && !command.test(job.command)) continue;
    out.push(job);
  }
  return out;
}

/**
 * The jobs `selector` names among `jobs` (the top-level jobs by id) and their children, each once:
 * by job, id, instance id or name (wildcards allowed); one that names nothing is ERR_JOB_NOT_FOUND.
 */
export function selectJobs(jobs: ReadonlyMap<number, Job>, selector: JobSelector): Job[] {
  const items = Array.isArray(selector) ? selector : [selector as number | string | Job];
  const out = new Set<Job>();
  for (const item of items) {
    for (const job of match(jobs, item)) out.add(job);
  }
  return [...out];
}

function match(jobs: ReadonlyMap<number, Job>, item: number | string | Job): Job[] {
  if (item instanceof Job) {
    if (isKnown(jobs, item)) return [item];
    throw notFound(item.id);
  }
  const all = [...allJobs(jobs, true)];
  if (typeof item === 'number' || /^\d+$/.test(item)) {
    const id = Number(item);
    const job = all.find((candidate) => candidate.id === id);
    if (!job) throw notFound(item);
    return [job];
  }
  const byInstance = all.find((candidate) => candidate.instanceId === item);
  if (byInstance) return [byInstance];
  const pattern = wildcard(item);
  // Names resolve among top-level jobs first, as users name those.
  const top = [...jobs.values()].filter((job) => pattern.test(job.name));
  const matches = top.length > 0 ? top : all.filter((job) => pattern.test(job.name));
  if (matches.length === 0 && !/[*?]/.test(item)) throw notFound(item);
  return matches;
}

function isKnown(jobs: ReadonlyMap<number, Job>, job: Job): boolean {
  const top = job.parent ?? job;
  return jobs.get(top.id) === top;
}

/** The top-level jobs, newest last, each followed by its descendants when `includeChildren`. */
export function* allJobs(jobs: ReadonlyMap<number, Job>, includeChildren: boolean): Generator<Job> {
  for (const job of jobs.values()) {
    yield job;
    if (includeChildren) yield* descendants(job);
  }
}

function* descendants(job: Job): Generator<Job> {
  for (const child of job.children) {
    yield child;
    yield* descendants(child);
  }
}

function notFound(selector: number | string): RjobError {
  return new RjobError(ErrorCode.JobNotFound, `No job matches "${selector}".`, { details: { selector } });
}

/** A name pattern (`*` and `?` as wildcards, any case) as a RegExp. */
export function wildcard(pattern: string): RegExp {
  const escaped = pattern
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${escaped}$`, 'i');
}
