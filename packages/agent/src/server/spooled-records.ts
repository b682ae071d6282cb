/**
 * A session's records moved to one disk spool per job (see record-source.ts): bounded with a block
 * or drop policy, persisted with the job's entry in the store, read and acknowledged by receives.
 */
import { type Job, type JobManager, leavesOf, RjobError } from '@rjob/core';
import { type PackedRecords, RecordSpool, type RecordSpoolOptions } from '../spool/record-spool.js';
import { AgentErrorCode } from '../error-codes.js';
import { type SpooledJob, spoolJob } from '../spool/spooled-job.js';
import type { JobStore, StoredJob } from '../store/job-store.js';
import {
  aborted,
  type HeldRecords,
  type RecordSource,
  reasonEntry,
  STREAM_BATCH_BYTES,
  STREAM_BATCH_RECORDS,
  type StreamedBatch,
  type StreamOptions,
} from './record-source.js';

export interface SpooledRecordsOptions {
  manager: JobManager;
  store: JobStore;
  sessionId: string;
  /** Options for every job's spool (bound, policy, ...). Defaults as RecordSpool's. */
  spool?: Omit<RecordSpoolOptions, 'dir'>;
}

const READ_BATCH_RECORDS = 1000;
/** On agent shutdown, how long to wait for stopped jobs' records to reach their spools. */
const SHUTDOWN_FLUSH_WAIT_MS = 5_000;

export class SpooledRecords implements RecordSource {
  readonly holdsAside = true;
  readonly #options: SpooledRecordsOptions;
  /** By top-level job. */
  readonly #spooled = new Map<Job, SpooledJob>();
  /**
   * Per spool, the last record handed to a consuming stream. Such records are in flight until the
   * client acknowledges them (then the spool is acked); meanwhile nobody else receives them.
   */
  readonly #reserved = new Map<RecordSpool, Map<object, number>>();
  /** Removals whose files are still being deleted. */
  readonly #forgetting = new Set<Promise<void>>();

  constructor(options: SpooledRecordsOptions) {
    this.#options = options;
  }

  async track(job: Job, data?: unknown): Promise<void> {
    const { manager, store, sessionId, spool } = this.#options;
    const spooled = await spoolJob({
      manager,
      job,
      store,
      sessionId,
      ...(spool ? { spool } : {}),
      ...(data === undefined ? {} : { data }),
    });
    this.#spooled.set(job, spooled);
  }

  /**
   * Takes back a job restored after an agent restart: its spool (sealed now, since nothing will
   * write to it again) and the instance id its store entry is kept under.
   */
  async adopt(
    job: Job,
    stored: StoredJob,
    children: ReadonlyArray<{ job: Job; stored: StoredJob }> = [],
  ): Promise<void> {
    const spools = new Map<number, RecordSpool>();
    // A restored parent's records are its children's, one spool each, as spoolJob made them.
    for (const each of [{ job, stored }, ...children]) {
      if (each.stored.spoolDir === undefined) continue;
      const spool = await RecordSpool.open({ ...this.#options.spool, dir: each.stored.spoolDir });
      if (!spool.sealed) await spool.seal();
      spools.set(each.job.id, spool);
    }
    this.#spooled.set(job, {
      job,
      spools,
      done: Promise.resolve(),
      close: async () => {
        await Promise.all([...spools.values()].map((spool) => spool.close()));
      },
      discard: async () => {
        await Promise.all([...spools.values()].map((spool) => spool.discard()));
      },
    });
  }

  async settled(jobs: Job[]): Promise<void> {
    const tops = new Set(jobs.map((job) => this.#spooledOf(job)).filter((each) => each !== undefined));
    await Promise.all([...tops].map((spooled) => spooled.done.catch(() => {})));
  }

  async receive(jobs: Job[], keep: boolean): Promise<Buffer[]> {
    const runs: Buffer[] = [];
    for (const leaf of leavesOf(jobs)) {
      const read = await this.#readLeaf(leaf, runs);
      if (read && !keep && read.last > read.spool.ackedSeq) await read.spool.ack(read.last);
      if (leaf.state === 'Failed') runs.push(reasonEntry(leaf));
    }
    return runs;
  }

  /** Reads what a leaf's spool holds past the cursor into `runs`; undefined when it has none. */
  async #readLeaf(
    leaf: Job,
    runs: Buffer[],
  ): Promise<{ spool: RecordSpool; from: number; last: number } | undefined> {
    const spooled = this.#spooledOf(leaf);
    const spool = spooled?.spools.get(leaf.id);
    if (!spooled || !spool) return undefined;
    // A finished job's last records may still be on their way from the manager to the spool.
    if (leaf.finished) await spooled.done.catch(() => {});
    const from = this.#cursor(spool);
    return { spool, from, last: await readAll(spool, from, runs) };
  }

  async hold(jobs: Job[]): Promise<HeldRecords> {
    const runs: Buffer[] = [];
    const held: Array<{ spool: RecordSpool; lastSeq: number; token: object }> = [];
    for (const leaf of leavesOf(jobs)) {
      const read = await this.#readLeaf(leaf, runs);
      if (read && read.last > read.from) {
        const { spool, last } = read;
        // Reserved as a stream reserves what it sent: no other receiver gets these records
        // while they are held, so a commit never writes records someone else also received.
        const token = {};
        const reservations = this.#reserved.get(spool) ?? new Map<object, number>();
        this.#reserved.set(spool, reservations);
        reservations.set(token, last);
        held.push({ spool, lastSeq: last, token });
      }
      if (leaf.state === 'Failed') runs.push(reasonEntry(leaf));
    }
    const release = (): void => {
      for (const { spool, token } of held) this.#reserved.get(spool)?.delete(token);
    };
    return {
      runs,
      commit: async () => {
        try {
          for (const { spool, lastSeq } of held) {
            if (lastSeq > spool.ackedSeq && !spool.closed) await spool.ack(lastSeq);
          }
        } finally {
          release();
        }
      },
      release,
    };
  }

  ackUpTo(leaf: Job, seq: number): void {
    const spool = this.#spooledOf(leaf)?.spools.get(leaf.id);
    if (!spool || spool.closed || seq <= spool.ackedSeq) return;
    // Lazy: the position is persisted within moments; a crash in between offers those records
    // again (delivered twice at worst, never lost).
    void spool.ack(seq, { lazy: true }).catch(() => {});
  }

  async *stream(
    jobs: Job[],
    signal: AbortSignal,
    options: StreamOptions = {},
  ): AsyncGenerator<StreamedBatch> {
    const keep = options.keep ?? false;
    const follow = options.follow ?? true;
    // Leaves one after the other: a job's records stay in order, which is what receivers rely on.
    for (const leaf of leavesOf(jobs)) {
      const spooled = this.#spooledOf(leaf);
      const spool = spooled?.spools.get(leaf.id);
      // Without follow, a finished job's last records may still be on their way to its spool.
      if (spool && !follow && leaf.finished) await spooled!.done.catch(() => {});
      if (spool) {
        let pendingAck = 0;
        let scheduled = false;
        // One ack per turn of the event loop at most, and a lazy one: the spool persists the
        // position within a moment, not once per batch.
        const flushAck = (): void => {
          scheduled = false;
          if (pendingAck > spool.ackedSeq && !spool.closed) {
            void spool.ack(pendingAck, { lazy: true }).catch(() => {});
          }
        };
        const commitUpTo = (seq: number) => (): void => {
          if (seq <= pendingAck) return;
          pendingAck = seq;
          if (!scheduled) {
            scheduled = true;
            setImmediate(flushAck);
          }
        };
        const token = {};
        const reservations = this.#reserved.get(spool) ?? new Map<object, number>();
        this.#reserved.set(spool, reservations);
        // Released at once on cancel (a takeover), not when this generator gets to run again: the
        // next client's subscription must start from the first record nobody acknowledged.
        const release = (): void => void reservations.delete(token);
        signal.addEventListener('abort', release, { once: true });
        try {
          const limits = { signal, maxBytes: STREAM_BATCH_BYTES, maxRecords: STREAM_BATCH_RECORDS };
          const from = this.#cursor(spool) + 1;
          // Without follow, what the spool holds now: the same reads, ending at the first empty one.
          const batches = follow ? spool.follow(from, limits) : readBatches(spool, from, limits);
          for await (const batch of batches) {
            if (signal.aborted) return;
            if (keep) {
              yield { entries: batch.bytes };
            } else {
              const lastSeq = batch.lastSeq;
              reservations.set(token, lastSeq);
              yield { entries: batch.bytes, commit: commitUpTo(lastSeq), leaf, lastSeq };
            }
          }
        } catch (error) {
          if (!RjobError.hasCode(error, AgentErrorCode.SpoolClosed)) throw error;
          return;
        } finally {
          // The listener stays: a cancel after the end (records sent, not yet acknowledged) must
          // still hand them back. Entries at or below the acked position are pruned by #cursor.
          if (signal.aborted) release();
        }
      }
      if (signal.aborted) return;
      // The spool is sealed once the job finished and every record is in it.
      if (follow && !leaf.finished) await Promise.race([waitFinished(leaf), aborted(signal)]);
      if (signal.aborted) return;
      if (leaf.state === 'Failed') yield { entries: reasonEntry(leaf) };
    }
  }

  hasMoreData(job: Job): boolean {
    if (job.children.length > 0) return job.children.some((child) => this.hasMoreData(child));
    const spool = this.#spooledOf(job)?.spools.get(job.id);
    return (
      !job.finished || job.buffer.length > 0 || (spool !== undefined && spool.lastSeq > this.#cursor(spool))
    );
  }

  /** The last record that is acknowledged or in flight to a consuming stream. */
  #cursor(spool: RecordSpool): number {
    let cursor = spool.ackedSeq;
    const reservations = this.#reserved.get(spool);
    for (const [token, seq] of reservations ?? []) {
      if (seq <= spool.ackedSeq) reservations!.delete(token);
      else cursor = Math.max(cursor, seq);
    }
    return cursor;
  }

  forget(jobs: Job[]): Promise<void> {
    const forgetting = this.#forget(jobs);
    // dispose waits for it: a session must not be removed while a job's files are going.
    this.#forgetting.add(forgetting);
    const done = (): void => void this.#forgetting.delete(forgetting);
    forgetting.then(done, done);
    return forgetting;
  }

  async #forget(jobs: Job[]): Promise<void> {
    const { store, sessionId } = this.#options;
    // Taken out at once, so the jobs' records are gone for readers before the files are.
    const entries = jobs.map((job) => [job, this.#spooled.get(job)] as const);
    for (const [job] of entries) this.#spooled.delete(job);
    for (const [job, spooled] of entries) {
      if (!spooled) continue;
      // Its files are deleted next: writing or syncing them first would only add latency.
      await spooled.discard().catch(() => {});
      for (const each of [job, ...leavesOf([job])]) {
        await store.removeJob(sessionId, each.instanceId).catch(() => {});
      }
    }
  }

  async dispose(keepStored = false): Promise<void> {
    await Promise.allSettled([...this.#forgetting]);
    const spooled = [...this.#spooled.values()];
    this.#spooled.clear();
    if (keepStored) {
      // The jobs were just stopped: let their last records and final states reach the disk.
      await Promise.race([
        Promise.allSettled(spooled.map((each) => each.done)),
        new Promise((resolve) => setTimeout(resolve, SHUTDOWN_FLUSH_WAIT_MS).unref?.()),
      ]);
    }
    await Promise.allSettled(spooled.map((each) => each.close()));
    if (!keepStored) await this.#options.store.removeSession(this.#options.sessionId).catch(() => {});
  }

  #spooledOf(job: Job): SpooledJob | undefined {
    let top = job;
    while (top.parent) top = top.parent;
    return this.#spooled.get(top);
  }
}

/** What a spool holds from `from` on now, a bounded read at a time (no waiting for more). */
async function* readBatches(
  spool: RecordSpool,
  from: number,
  limits: { signal: AbortSignal; maxBytes: number; maxRecords: number },
): AsyncGenerator<PackedRecords> {
  let next = from;
  while (!limits.signal.aborted) {
    const batch = await spool.read(next, limits);
    if (batch.count === 0) return;
    next = batch.lastSeq + 1;
    yield batch;
  }
}

/**
 * Adds what `spool` holds after `after` to `runs` (one run: its reads follow on from each other);
 * returns the seq of the last record read (`after` when there was none).
 */
async function readAll(spool: RecordSpool, after: number, runs: Buffer[]): Promise<number> {
  const pieces: Buffer[] = [];
  let last = after;
  for (;;) {
    const batch = await spool.read(last + 1, { maxRecords: READ_BATCH_RECORDS });
    if (batch.count === 0) break;
    pieces.push(batch.bytes);
    last = batch.lastSeq;
  }
  if (pieces.length > 0) runs.push(pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces));
  return last;
}

async function waitFinished(job: Job): Promise<void> {
  while (!job.finished) await job.changed();
}
