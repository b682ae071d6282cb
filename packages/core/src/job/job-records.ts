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
export async function* streamRecords(
  leaves: Job[],
  keep: boolean | undefined,
  drained: (leaf: Job) => void,
): AsyncGenerator<JobRecord> {
  const cursors = new Map(leaves.map((leaf) => [leaf, leaf.buffer.start]));
  const done = new Set<Job>();
  while (done.size < leaves.length) {
    let progressed = false;
    for (const leaf of leaves) {
      if (done.has(leaf)) continue;
      // Read `finished` before draining: a record written after this check is still drained
      // on the next pass, because a finished job writes nothing more.
      const finished = leaf.finished;
      if (keep) {
        let cursor = Math.max(cursors.get(leaf)!, leaf.buffer.start);
        for (let record = leaf.buffer.at(cursor); record; record = leaf.buffer.at(cursor)) {
          cursor++;
          cursors.set(leaf, cursor);
          progressed = true;
          yield record;
        }
      } else {
        for (let record = leaf.buffer.shift(); record; record = leaf.buffer.shift()) {
          drained(leaf);
          progressed = true;
          yield record;
        }
      }
      if (finished) {
        done.add(leaf);
        if (leaf.state === 'Failed') yield reasonRecord(leaf);
      }
    }
    if (!progressed && done.size < leaves.length) {
      await Promise.race(leaves.filter((leaf) => !done.has(leaf)).map((leaf) => leaf.changed()));
    }
  }
}

/** As {@link streamRecords}, consuming, in arrays of what one job held at once. */
export async function* batchRecords(
  leaves: Job[],
  drained: (leaf: Job) => void,
): AsyncGenerator<JobRecord[]> {
  const done = new Set<Job>();
  while (done.size < leaves.length) {
    let progressed = false;
    for (const leaf of leaves) {
      if (done.has(leaf)) continue;
      // As in receiveStream: read `finished` first, then drain.
      const finished = leaf.finished;
      if (leaf.buffer.length > 0) {
        const records =
          leaf.buffer.length <= MAX_BATCH_RECORDS
            ? leaf.buffer.takeAll()
            : takeSome(leaf.buffer, MAX_BATCH_RECORDS);
        drained(leaf);
        progressed = true;
        yield records;
      }
      // A finished job may still hold records when the last take was capped.
      if (finished && leaf.buffer.length === 0) {
        done.add(leaf);
        if (leaf.state === 'Failed') yield [reasonRecord(leaf)];
      }
    }
    if (!progressed && done.size < leaves.length) {
      await Promise.race(leaves.filter((leaf) => !done.has(leaf)).map((leaf) => leaf.changed()));
    }
  }
}
