/**
 * Following jobs' states for a job manager: waiting until they finish, a parent's state from its
 * children's, and how many of a parent's children run at once.
 */
import { ErrorCode, RjobError } from '../errors.js';
import type { Job } from './job.js';
import type { WaitOptions } from './job-manager-options.js';
import { isTerminal, type JobState } from './states.js';

/**
 * The jobs once they finished (with `any`, the first to finish); an empty list when `timeoutMs`
 * ran out first.
 */
export async function waitFor(jobs: Job[], options: WaitOptions): Promise<Job[]> {
  const finished = () => jobs.filter((job) => job.finished);
  const satisfied = () => (options.any ? finished().length > 0 : finished().length === jobs.length);
  let timer: NodeJS.Timeout | undefined;
  let timedOut = false;
  const timeout =
    options.timeoutMs === undefined
      ? undefined
      : new Promise<void>((resolve) => {
          timer = setTimeout(() => {
            timedOut = true;
            resolve();
          }, options.timeoutMs);
        });
  try {
    while (!satisfied()) {
      const changes = jobs.filter((job) => !job.finished).map((job) => job.changed());
      await Promise.race(timeout ? [...changes, timeout] : changes);
      if (timedOut && !satisfied()) return [];
    }
  } finally {
    if (timer) clearTimeout(timer);
  }
  const done = finished();
  return options.any ? done.slice(0, 1) : done;
}

/**
 * Sets a parent job's state from its children's: Failed (with a reason naming the failed
 * children), Stopped or Completed once all finished, else Disconnected, Stopping, NotStarted or
 * Running.
 */
export function deriveParentState(parent: Job): void {
  if (parent.finished) return;
  const states = parent.children.map((child) => child.state);
  let next: JobState;
  if (states.every(isTerminal)) {
    if (states.includes('Failed')) next = 'Failed';
    else if (states.includes('Stopped') || parent.stopRequested) next = 'Stopped';
    else next = 'Completed';
  } else if (states.includes('Disconnected')) next = 'Disconnected';
  else if (parent.stopRequested) next = 'Stopping';
  else if (states.every((state) => state === 'NotStarted')) next = 'NotStarted';
  else next = 'Running';
  if (next === parent.state) return;
  if (next === 'Completed' && parent.state === 'NotStarted') parent.setState('Running');
  let reason: RjobError | undefined;
  if (next === 'Failed') {
    const failed = parent.children.filter((child) => child.state === 'Failed');
    reason = new RjobError(
      ErrorCode.ChildJobFailed,
      `${failed.length} of ${parent.children.length} child jobs failed: ${failed
        .map((child) => `${child.location} (${child.reason?.message ?? 'failed'})`)
        .join('; ')}`,
      { cause: failed[0]?.reason, details: { failedJobIds: failed.map((child) => child.id) } },
    );
  }
  parent.setState(next, reason);
}

/**
 * Launches a parent's children at most `limit` at a time: a child takes a slot when launched and
 * frees it when it ends; one stopped while it waited for its turn never starts. The parent's state
 * follows its children's.
 */
export function launchThrottled(parent: Job, limit: number, launch: (child: Job) => void): void {
  const pending = [...parent.children];
  let running = 0;
  const launched = new Set<Job>();
  const next = (): void => {
    while (running < limit && pending.length > 0) {
      const child = pending.shift()!;
      if (child.finished || child.stopRequested) continue;
      running++;
      launched.add(child);
      launch(child);
    }
  };
  for (const child of parent.children) {
    child.onStateChange(({ state }) => {
      if (isTerminal(state) && launched.delete(child)) {
        running--;
        next();
      }
      deriveParentState(parent);
    });
  }
  next();
}
