/**
 * A restored session's jobs put back after an agent restart, in id order, under their ids and
 * instance ids (JobManager.restore). Their records are read from their spools.
 */
import type { Job, JobManager, RestoredIdentity } from '@rjob/core';
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
  for (const entry of [...stored].sort((a, b) => a.id - b.id)) {
    if (entry.parentId !== undefined) continue;
    const children = entry.childIds.map((id) => byId.get(id));
    if (children.length > 0 && children.every((child) => child !== undefined)) {
      await restoreGroup(target, entry, children as StoredJob[]);
      continue;
    }
    const work = storedWork(entry.data);
    if (work?.waiting) {
      // It never ran: back in the queue.
      await queuedStart({ jobs, queue, records, work, name: entry.name, stored: entry, watch: target.watch });
      continue;
    }
    const job = await jobs.restore(restoredJobType(entry), entry, {
      ...identity(entry),
      name: entry.name,
      command: entry.command,
      location: entry.location,
    });
    if (work) rememberWork(job, work);
    await records.adopt(job, entry);
  }
  queue.pump();
}

/**
 * Puts a restored parent back with its children (job.startGroup's jobs). Each child reports its
 * stored outcome, so the parent's state is derived again from theirs.
 */
async function restoreGroup(
  { jobs, records }: RestoreTarget,
  entry: StoredJob,
  stored: StoredJob[],
): Promise<void> {
  const parent = jobs.restoreGroup({
    ...identity(entry),
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
    childIdentities: stored.map(identity),
  });
  await records.adopt(
    parent,
    entry,
    parent.children.map((job, i) => ({ job, stored: stored[i]! })),
  );
}

/** Who a stored job was: its ids and its times. */
function identity(entry: StoredJob): RestoredIdentity {
  return {
    id: entry.id,
    instanceId: entry.instanceId,
    ...(entry.beginTime ? { beginTime: entry.beginTime } : {}),
    ...(entry.endTime ? { endTime: entry.endTime } : {}),
  };
}
