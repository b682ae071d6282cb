/**
 * A restored session's jobs put back after an agent restart, in id order and under their ids (a
 * placeholder takes each id that belonged to a removed job). Their records are read from their
 * spools.
 */
import type { Job, JobManager } from '@rjob/core';
import type { StoredJob } from '../store/job-store.js';
import type { JobQueue } from './job-queue.js';
import { rememberWork, storedWork } from './job-work.js';
import { queuedStart } from './queued-start.js';
import type { SpooledRecords } from './spooled-records.js';
import { restoredJobType } from './restored-job-type.js';

export interface RestoreTarget {
  jobs: JobManager;
  queue: JobQueue;
  records: SpooledRecords;
  /** Called with each job that waits in the queue again (the session's state events). */
  watch(job: Job): void;
}

/** Puts `stored` back into the target's fresh JobManager, then lets the queue run what may. */
export async function restoreJobs(target: RestoreTarget, stored: StoredJob[]): Promise<void> {
  const { jobs, queue, records } = target;
  const byId = new Map(stored.map((entry) => [entry.id, entry]));
  // Ids are handed out in order from 1 in this fresh manager; a group needs to know the next one.
  let nextId = 1;
  for (const entry of [...stored].sort((a, b) => a.id - b.id)) {
    if (entry.parentId !== undefined) continue;
    const children = entry.childIds.map((id) => byId.get(id));
    if (children.length > 0 && children.every((child) => child !== undefined)) {
      nextId = await restoreGroup(target, entry, children as StoredJob[], nextId);
      continue;
    }
    const work = storedWork(entry.data);
    if (work?.waiting) {
      // It never ran: back in the queue, under its id and instance id.
      nextId = await skipTo(jobs, entry, nextId);
      await queuedStart({
        jobs,
        queue,
        records,
        work,
        name: entry.name,
        stored: entry,
        watch: target.watch,
      });
      nextId = entry.id + 1;
      continue;
    }
    for (;;) {
      const job = await jobs.start(restoredJobType(entry), entry, {
        name: entry.name,
        command: entry.command,
        location: entry.location,
      });
      nextId = job.id + 1;
      if (job.id >= entry.id) {
        const work = storedWork(entry.data);
        if (work) rememberWork(job, work);
        await records.adopt(job, entry);
        break;
      }
      await jobs.remove(job, { force: true });
    }
  }
  queue.pump();
}

/**
 * Puts a restored parent back with its children (job.startGroup's jobs): placeholders take the
 * ids below the parent's, then startGroup gives the parent its id and the children the next ones,
 * as it did when the group was started. Each child reports its stored outcome, so the parent's
 * state is derived again from theirs. Returns the next free id.
 */
async function restoreGroup(
  { jobs, records }: RestoreTarget,
  entry: StoredJob,
  stored: StoredJob[],
  nextId: number,
): Promise<number> {
  await skipTo(jobs, entry, nextId);
  const parent = jobs.startGroup({
    name: entry.name,
    type: entry.type,
    command: entry.command,
    location: entry.location,
    children: stored.map((child) => ({
      type: restoredJobType(child),
      definition: child,
      name: child.name,
      location: child.location,
    })),
  });
  await records.adopt(
    parent,
    entry,
    parent.children.map((job, i) => ({ job, stored: stored[i]! })),
  );
  return Math.max(parent.id, ...parent.children.map((child) => child.id)) + 1;
}

/** Placeholders take the ids below `entry`'s (those of removed jobs). Returns the next free id. */
async function skipTo(jobs: JobManager, entry: StoredJob, nextId: number): Promise<number> {
  let next = nextId;
  while (next < entry.id) {
    const placeholder = await jobs.start(restoredJobType(entry), entry);
    next = placeholder.id + 1;
    await jobs.remove(placeholder, { force: true });
  }
  return next;
}
