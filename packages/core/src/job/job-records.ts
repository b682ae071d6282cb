/**
 * Reading records out of jobs' buffers for {@link JobManager}'s receive verbs: which jobs hold
 * them, the passes over those that take (or, with `keep`, only read) what is there until every
 * one finished, and the record that repeats a Failed job's reason.
 */
import type { Job } from './job.js';
import type { JobManager } from './job-manager.js';
import type { JobRecord } from './records.js';

/** The most records one {@link JobManager.receiveBatches} array holds. */
const MAX_BATCH_RECORDS = 1024;

/** The jobs that hold records: the selected jobs themselves, or their leaves for parents. */
export function leavesOf(jobs: Job[]): Job[] {
  const out: Job[] = [];
  for (const job of jobs) {
    if (job.children.length === 0) out.push(job);
    else out.push(...leavesOf(job.children));
  }
  return [...new Set(out)];
}

function takeSome(buffer: Job['buffer'], count: number): JobRecord[] {
  const out: JobRecord[] = [];
  for (let record = buffer.shift(); record; record = out.length < count ? buffer.shift() : undefined) {
    out.push(record);
  }
  return out;
}

/** The synthetic record that repeats a Failed job's reason at the end of what receive returns. */
export function reasonRecord(job: Job): JobRecord {
  return {
    stream: 'error',
    data: job.reason,
    seq: 0,
    timeMs: job.endTime?.getTime() ?? Date.now(),
    jobId: job.id,
    location: job.location,
    reason: true,
  };
}

/**
 * The leaves' records one at a time until each finished and was drained, then its reason if it
 * Failed; consumed (and `drained` called) unless `keep`.
 */
export function streamRecords(
  leaves: Job[],
  keep: boolean | undefined,
  drained: (leaf: Job) => void,
): AsyncGenerator<JobRecord> {
  const cursors = new Map(leaves.map((leaf) => [leaf, leaf.buffer.start]));
  return passes(
    leaves,
    function* (leaf) {
      if (keep) {
        let cursor = Math.max(cursors.get(leaf)!, leaf.buffer.start);
        for (let record = leaf.buffer.at(cursor); record; record = leaf.buffer.at(cursor)) {
          cursor++;
          cursors.set(leaf, cursor);
          yield record;
        }
      } else {
        // One at a time: a record is taken only when the consumer asks for it.
        for (let record = leaf.buffer.shift(); record; record = leaf.buffer.shift()) {
          drained(leaf);
          yield record;
        }
      }
    },
    () => true,
    reasonRecord,
  );
}

/** As {@link streamRecords}, consuming, in arrays of what one job held at once. */
export function batchRecords(leaves: Job[], drained: (leaf: Job) => void): AsyncGenerator<JobRecord[]> {
  return passes(
    leaves,
    function* (leaf) {
      if (leaf.buffer.length === 0) return;
      const records =
        leaf.buffer.length <= MAX_BATCH_RECORDS
          ? leaf.buffer.takeAll()
          : takeSome(leaf.buffer, MAX_BATCH_RECORDS);
      drained(leaf);
      yield records;
    },
    // A finished job may still hold records when the last take was capped.
    (leaf) => leaf.buffer.length === 0,
    (leaf) => [reasonRecord(leaf)],
  );
}

/**
 * Passes over `leaves` until each finished and `emptied` says nothing of it is left: yields what
 * `take` gives of each, then a Failed leaf's reason; waits for a change when a pass found nothing.
 */
async function* passes<T>(
  leaves: Job[],
  take: (leaf: Job) => Iterable<T>,
  emptied: (leaf: Job) => boolean,
  reason: (leaf: Job) => T,
): AsyncGenerator<T> {
  const done = new Set<Job>();
  while (done.size < leaves.length) {
    let progressed = false;
    for (const leaf of leaves) {
      if (done.has(leaf)) continue;
      // Read `finished` before taking: a record written after this check is still taken on the
      // next pass, because a finished job writes nothing more.
      const finished = leaf.finished;
      for (const item of take(leaf)) {
        progressed = true;
        yield item;
      }
      if (finished && emptied(leaf)) {
        done.add(leaf);
        if (leaf.state === 'Failed') yield reason(leaf);
      }
    }
    if (!progressed && done.size < leaves.length) {
      await Promise.race(leaves.filter((leaf) => !done.has(leaf)).map((leaf) => leaf.changed()));
    }
  }
}
