/** A session's records read straight from its JobManager's buffers (see record-source.ts). */
import { type Job, type JobManager, type JobRecord, leavesOf, serializeError } from '@rjob/core';
import { encodeRecordEntries, encodeRecordRuns } from '@rjob/core/codec';
import {
  aborted,
  type HeldRecords,
  type RecordSource,
  STREAM_BATCH_RECORDS,
  type StreamedBatch,
  type StreamOptions,
} from './record-source.js';

/**
 * The records of a memory agent: its JobManager's buffers, consumed as they are read, and encoded
 * as record entries on the way out (what a spool would have held them as).
 */
export class MemoryRecords implements RecordSource {
  readonly holdsAside = false;

  constructor(readonly manager: JobManager) {}

  async track(): Promise<void> {}

  async receive(jobs: Job[], keep: boolean): Promise<Buffer[]> {
    return encodeRecordRuns((await this.manager.receive(jobs, { keep })).map(wireRecord));
  }

  async hold(jobs: Job[]): Promise<HeldRecords> {
    const leaves = leavesOf(jobs);
    // Buffer positions are absolute, so the end of what was read stays meaningful however much
    // is written or consumed before the commit.
    const ends = new Map(leaves.map((leaf) => [leaf, leaf.buffer.end]));
    const runs = encodeRecordRuns((await this.manager.receive(jobs, { keep: true })).map(wireRecord));
    return {
      runs,
      commit: async () => {
        for (const [leaf, end] of ends) {
          if (leaf.buffer.start >= end) continue;
          // Through the manager's consuming stream, one record per step, so it also resumes a
          // paused producer. Each step takes the head record at once, so checking first means it
          // never takes a record written after the read, nor waits for one another reader took.
          const stream = this.manager.receiveStream([leaf], { keep: false });
          while (leaf.buffer.start < end) await stream.next();
          await stream.return(undefined);
        }
      },
      // Nothing was taken: memory buffers cannot set records aside for one reader.
      release: () => {},
    };
  }

  ackUpTo(): void {}

  async *stream(
    jobs: Job[],
    signal: AbortSignal,
    options: StreamOptions = {},
  ): AsyncGenerator<StreamedBatch> {
    const keep = options.keep ?? false;
    if (options.follow === false) {
      // What is there now, in bounded batches of one job's consecutive records each.
      const records = (await this.manager.receive(jobs, { keep })).map(wireRecord);
      for (let i = 0; i < records.length && !signal.aborted; i += STREAM_BATCH_RECORDS) {
        for (const entries of encodeRecordRuns(records.slice(i, i + STREAM_BATCH_RECORDS))) {
          if (signal.aborted) return;
          yield { entries };
        }
      }
      return;
    }
    const stream = this.manager.receiveStream(jobs, { keep });
    const leaves = leavesOf(jobs);
    const stop = aborted(signal);
    let settled = false;
    try {
      while (!signal.aborted) {
        // The manager's stream consumes a record when it yields it; only ask once one is there,
        // so an abort never leaves a pending next() that would take a record nobody sends.
        if (!keep) await recordsReady(leaves, stop);
        if (signal.aborted) return;
        const next = await Promise.race([stream.next(), stop.then(() => undefined)]);
        if (!next) return;
        if (next.done) {
          settled = true;
          return;
        }
        // One record per batch: the manager's stream cannot say whether another is ready without
        // taking it. This source only serves agents that do not persist (tests, --no-persist).
        const record = wireRecord(next.value);
        yield { entries: encodeRecordEntries([record], record.seq) };
      }
    } finally {
      // Only safe when the manager's generator is not inside a next().
      if (settled || !keep) void stream.return(undefined).catch(() => {});
    }
  }

  hasMoreData(job: Job): boolean {
    return job.hasMoreData;
  }

  async settled(): Promise<void> {}

  async forget(): Promise<void> {}

  async dispose(): Promise<void> {}
}

/** Resolves once a leaf holds a record, every leaf has finished, or `stop` resolves. */
async function recordsReady(leaves: Job[], stop: Promise<void>): Promise<void> {
  for (;;) {
    if (leaves.some((leaf) => leaf.buffer.length > 0) || leaves.every((leaf) => leaf.finished)) return;
    const running = leaves.filter((leaf) => !leaf.finished);
    let stopped = false;
    await Promise.race([...running.map((leaf) => leaf.changed()), stop.then(() => (stopped = true))]);
    if (stopped) return;
  }
}

/** A Failed job's reason record carries an RjobError; V8 serialization would drop its code. */
function wireRecord(record: JobRecord): JobRecord {
  if (record.reason && record.data instanceof Error) return { ...record, data: serializeError(record.data) };
  return record;
}
