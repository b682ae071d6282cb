import { isTerminal, type Job, type JobManager, RjobError, serializeError } from '@rjob/core';
import type { JobStore, StoredJob } from '../store/job-store.js';
import { RecordSpool, type RecordSpoolOptions } from './record-spool.js';

export interface SpoolJobOptions {
  manager: JobManager;
  /** A job of `manager`, just started. A parent's children are spooled one spool each. */
  job: Job;
  store: JobStore;
  sessionId: string;
  /** Options for every spool (the directory is the store's {@link JobStore.spoolDir}). */
  spool?: Omit<RecordSpoolOptions, 'dir'>;
  /** Saved with the job's entry (e.g. its definition). */
  data?: unknown;
}

export interface SpooledJob {
  readonly job: Job;
  /** The spool of every job that holds records (the job itself, or each child), by job id. */
  readonly spools: ReadonlyMap<number, RecordSpool>;
  /**
   * Resolves once every record is in its spool, the spools are sealed and the final states are
   * persisted. Rejects if the disk failed.
   */
  readonly done: Promise<void>;
  /**
   * Stops spooling and closes the spools (for agent shutdown). Records not taken yet stay in the
   * manager; the job's entry keeps its last persisted state.
   */
  close(): Promise<void>;
  /** As {@link close}, for a job whose files are deleted next: nothing is written or synced. */
  discard(): Promise<void>;
}

/**
 * Moves a live job's records from the JobManager into disk spools and keeps its entry in the
 * store up to date.
 *
 * Records are taken with `receiveBatches` and each batch's append is awaited, so when a `block` spool is
 * full the adapter stops taking records, the job's in-memory buffer fills, and the manager's own
 * flow control pauses the producer: nothing is lost and memory stays bounded. A job's terminal
 * state is persisted only after all its records are in the spool, so a job stored as finished
 * always has complete results; if the agent dies before that, the job comes back Failed
 * ("agent restarted").
 */
export async function spoolJob(options: SpoolJobOptions): Promise<SpooledJob> {
  const { manager, job, store, sessionId } = options;
  const spools = new Map<number, RecordSpool>();
  const unsubscribe: Array<() => void> = [];
  const leafRuns: Array<Promise<void>> = [];
  const parents: Array<() => Promise<void>> = [];
  let closed = false;
  let saveFailure: unknown;

  for (const each of [job, ...descendants(job)]) {
    const isLeaf = each.children.length === 0;
    const spoolDir = isLeaf ? store.spoolDir(sessionId, each.instanceId) : undefined;
    const data = each === job ? options.data : undefined;
    const save = () => store.saveJob(toStoredJob(each, sessionId, { spoolDir, data }));
    // Entries of unfinished jobs are written without fsync: after a power cut such an entry reads
    // as "Failed: agent restarted" or is missing, which tells the same; the fsync would only put
    // a disk flush between starting a job and reading its output (an invoke waits for it). Terminal
    // states, which must survive as they are, are synced.
    const saveUnfinished = () =>
      store.saveJob(toStoredJob(each, sessionId, { spoolDir, data }), { fsync: false });
    // The entry exists before the spool, so a spool directory on disk always has an owner (after
    // a crash of the process: a rename is atomic; a power cut may leave an orphan spool directory).
    await saveUnfinished();
    unsubscribe.push(
      each.onStateChange(({ state }) => {
        // Terminal states wait until the records (a leaf's, or the children's) are persisted.
        if (isTerminal(state) || closed) return;
        saveUnfinished().catch((error) => (saveFailure ??= error));
      }),
    );
    if (!isLeaf) {
      parents.unshift(save);
      continue;
    }
    const spool = await RecordSpool.open({ ...options.spool, dir: spoolDir! });
    spools.set(each.id, spool);
    leafRuns.push(
      (async () => {
        for await (const batch of manager.receiveBatches(each)) {
          // A Failed job's reason is part of its entry, not of its records.
          const records = batch.at(-1)!.reason ? batch.filter((record) => !record.reason) : batch;
          if (records.length > 0) await spool.appendMany(records);
          if (closed) return;
        }
        if (closed) return;
        await spool.seal();
        // A job removed meanwhile has its files deleted: saving would bring its entry back.
        if (closed) return;
        await save();
      })(),
    );
  }

  const done = (async () => {
    try {
      await Promise.all(leafRuns);
      // Children first, then parents: a parent persisted as finished has finished children.
      if (!closed) for (const save of parents) await save();
    } catch (error) {
      if (!closed || !RjobError.hasCode(error, 'ERR_SPOOL_CLOSED')) throw error;
    }
    if (saveFailure !== undefined) throw saveFailure;
  })();
  // `done` is the caller's to await; do not let an unobserved rejection crash the agent.
  done.catch(() => {});

  return {
    job,
    spools,
    done,
    async close() {
      closed = true;
      for (const off of unsubscribe) off();
      await Promise.all([...spools.values()].map((spool) => spool.close()));
    },
    async discard() {
      closed = true;
      for (const off of unsubscribe) off();
      await Promise.all([...spools.values()].map((spool) => spool.discard()));
    },
  };
}

/** Builds a job's stored entry from the live job. */
export function toStoredJob(
  job: Job,
  sessionId: string,
  extra: { spoolDir?: string | undefined; data?: unknown } = {},
): StoredJob {
  const stored: StoredJob = {
    sessionId,
    id: job.id,
    instanceId: job.instanceId,
    name: job.name,
    type: job.type,
    command: job.command,
    location: job.location,
    state: job.state,
    childIds: job.children.map((child) => child.id),
  };
  if (job.reason) stored.reason = serializeError(job.reason);
  if (job.beginTime) stored.beginTime = job.beginTime;
  if (job.endTime) stored.endTime = job.endTime;
  if (job.parent) stored.parentId = job.parent.id;
  if (extra.spoolDir !== undefined) stored.spoolDir = extra.spoolDir;
  if (extra.data !== undefined) stored.data = extra.data;
  return stored;
}

function descendants(job: Job): Job[] {
  return job.children.flatMap((child) => [child, ...descendants(child)]);
}
