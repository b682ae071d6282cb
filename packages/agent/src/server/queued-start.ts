/**
 * The agent side of `rjob start --after/--group`, kept out of AgentSession: a job that waits for
 * its turn in the agent's {@link JobQueue}.
 */
import { rm } from 'node:fs/promises';
import { ErrorCode, type Job, type JobManager, type JobType, RjobError } from '@rjob/core';
import type { StoredJob } from '../store/job-store.js';
import type { JobQueue } from './job-queue.js';
import { type JobWork, rememberWork } from './job-work.js';
import type { RecordSource } from './record-source.js';
import { SpooledRecords } from './spooled-records.js';

export interface QueuedStart {
  jobs: JobManager;
  queue: JobQueue;
  records: RecordSource;
  /** What to run, with `after` (job ids) and `group` set. */
  work: JobWork;
  name?: string;
  /** A waiting job put back after an agent restart: it keeps its ids and its store entry. */
  stored?: StoredJob;
  /** Called with the started job (AgentSession's state events). */
  watch?: (job: Job) => void;
}

/** Starts a job that waits in NotStarted until the queue lets it run. */
export async function queuedStart(init: QueuedStart): Promise<Job> {
  const { jobs, queue, records, work, stored } = init;
  const inner = findType(jobs, work.type);
  // A dependency that is gone was removed after it Completed (one removed earlier was stopped
  // first, which failed this job): it is met.
  const deps = (work.after ?? []).flatMap((id) => jobs.get({ ids: [id] }));
  const type = queue.waitingType(inner, work, deps, jobs);
  const options = init.name === undefined ? {} : { name: init.name };
  const job = stored
    ? await jobs.restore(type, work.definition, { ...options, id: stored.id, instanceId: stored.instanceId })
    : await jobs.start(type, work.definition, options);
  rememberWork(job, work);
  try {
    if (stored && records instanceof SpooledRecords) {
      // It wrote nothing; its old spool (sealed if the old agent stopped it) makes way for a new one.
      if (stored.spoolDir !== undefined) await rm(stored.spoolDir, { recursive: true, force: true });
    }
    // The job store keeps the work as the job's data: what it waits for survives a restart.
    await records.track(job, work);
  } catch (error) {
    await jobs.remove(job, { force: true }).catch(() => {});
    throw error;
  }
  init.watch?.(job);
  return job;
}

function findType(jobs: JobManager, name: string): JobType {
  const key = name.toLowerCase();
  const type = jobs.types.find(
    (each) => each.name.toLowerCase() === key || each.aliases?.some((alias) => alias.toLowerCase() === key),
  );
  if (!type) {
    throw new RjobError(ErrorCode.UnknownJobType, `No job type named "${name}".`, {
      details: { type: name },
    });
  }
  return type;
}
