import { isTerminal, type Job, type JobManager, RjobError, serializeError } from '@rjob/core';
import { AgentErrorCode, isSpaceError } from '../errors.js';
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
  const leafStarts: Array<() => void> = [];
  let closed = false;
  let saveFailure: unknown;

  const created: Array<{ instanceId: string; spoolDir: string | undefined }> = [];
  try {
    for (const each of [job, ...descendants(job)]) {
      const isLeaf = each.children.length === 0;
      const spoolDir = isLeaf ? store.spoolDir(sessionId, each.instanceId) : undefined;
      const data = each === job ? options.data : undefined;
      // Each save supersedes the ones before it: a save that failed for space (a full disk) is
      // retried until it goes through, unless a newer one was asked for meanwhile.
      let generation = 0;
      const retried = (write: () => Promise<void>): Promise<void> => {
        const mine = ++generation;
        return retryOnSpace(write, () => closed || mine !== generation);
      };
      const save = () => retried(() => store.saveJob(toStoredJob(each, sessionId, { spoolDir, data })));
      // Entries of unfinished jobs are written without fsync: after a power cut such an entry reads
      // as "Failed: agent restarted" or is missing, which tells the same; the fsync would only put
      // a disk flush between starting a job and reading its output (an invoke waits for it). Terminal
      // states, which must survive as they are, are synced.
      const saveUnfinished = () =>
        retried(() => store.saveJob(toStoredJob(each, sessionId, { spoolDir, data }), { fsync: false }));
      // The entry exists before the spool, so a spool directory on disk always has an owner (after
      // a crash of the process: a rename is atomic; a power cut may leave an orphan spool directory).
      // Not retried: a job that cannot be recorded is refused at once (ERR_DISK_FULL on a full disk).
      await store.saveJob(toStoredJob(each, sessionId, { spoolDir, data }), { fsync: false });
      created.push({ instanceId: each.instanceId, spoolDir });
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
      // leafRuns start below, once every spool is open.
      leafStarts.push(() =>
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
        ),
      );
    }
  } catch (error) {
    // Nothing of a job that could not be set up stays behind (its caller refuses the job).
    closed = true;
    for (const off of unsubscribe) off();
    await Promise.all([...spools.values()].map((spool) => spool.discard()));
    for (const each of created)
      await store.removeJob(sessionId, each.instanceId, each.spoolDir).catch(() => {});
    throw error;
  }
  for (const start of leafStarts) start();

  const done = (async () => {
    try {
      await Promise.all(leafRuns);
      // Children first, then parents: a parent persisted as finished has finished children.
      if (!closed) for (const save of parents) await save();
    } catch (error) {
      if (!closed || !RjobError.hasCode(error, AgentErrorCode.SpoolClosed)) throw error;
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

/**
 * Runs `write`, again after a growing pause while it fails for space, until it goes through or
 * `stop()` says it is no longer wanted (then it resolves quietly, the newer write will do).
 */
async function retryOnSpace(write: () => Promise<void>, stop: () => boolean): Promise<void> {
  for (let waitMs = 50; ; waitMs = Math.min(waitMs * 2, 2000)) {
    try {
      return await write();
    } catch (error) {
      if (!isSpaceError(error)) throw error;
      if (stop()) return;
    }
    await new Promise((resolve) => setTimeout(resolve, waitMs));
    if (stop()) return;
  }
}
