/**
 * The bound of a spool and the back-pressure it puts on the job: `block` makes appends wait until
 * acknowledgements free space, `drop` deletes the oldest segments to make room; `writable` tells
 * a producer that can pause when the next append would wait.
 */
import type { JobRecord, RjobError } from '@rjob/core';
import type { Segment } from './segment.js';
import { type Deferred, deferred, type SpoolState } from './spool-state.js';

/** What the bound needs of the rest of the spool. */
export interface BoundHost {
  /** Takes an encoded entry (header not yet stamped) as the next record. */
  accept(record: JobRecord, entry: Buffer): number;
  /** Deletes the oldest segment. */
  discardOldest(): Segment;
  /** Gets what was just accepted written soon. */
  scheduleFlush(): void;
}

interface Waiter {
  record: JobRecord;
  /** The encoded entry, header not yet stamped. */
  entry: Buffer;
  resolve(seq: number): void;
  reject(error: unknown): void;
}

/** The bound policy of one spool, on its shared state. */
export class SpoolBound {
  readonly #s: SpoolState;
  readonly #host: BoundHost;
  #waiters: Waiter[] = [];
  #writableListeners = new Set<() => void>();
  #writableWaiters: Deferred | undefined;
  #wasWritable = true;
  #droppedRecords = 0;

  constructor(state: SpoolState, host: BoundHost) {
    this.#s = state;
    this.#host = host;
  }

  /** Records deleted by the `drop` policy since the spool was opened. */
  get droppedRecords(): number {
    return this.#droppedRecords;
  }

  /** Appends wait for room: a new one queues behind them. */
  get waiting(): boolean {
    return this.#waiters.length > 0;
  }

  /** See RecordSpool.writable. */
  get writable(): boolean {
    const s = this.#s;
    return (
      !s.closed &&
      !s.sealed &&
      !s.failure &&
      this.#waiters.length === 0 &&
      s.pendingBytes < s.writeBufferBytes &&
      (s.policy === 'drop' || s.bytes < s.maxBytes)
    );
  }

  /** Takes the state as it is now as the last one producers were told of (a spool just opened). */
  settle(): void {
    this.#wasWritable = this.writable;
  }

  /** Calls `listener` each time {@link writable} turns true again. Returns an unsubscribe function. */
  onWritable(listener: () => void): () => void {
    this.#writableListeners.add(listener);
    return () => this.#writableListeners.delete(listener);
  }

  /** Resolves when {@link writable} is true; rejects with what `problem` says stops appends. */
  waitWritable(problem: () => RjobError | undefined): Promise<void> {
    const now = problem();
    if (now) return Promise.reject(now);
    if (this.writable) return Promise.resolve();
    this.#writableWaiters ??= deferred();
    return this.#writableWaiters.promise.then(() => {
      const after = problem();
      if (after) throw after;
    });
  }

  /** Resolves the waits for {@link writable} (the spool closed: they learn why from the spool). */
  releaseWritableWaiters(): void {
    this.#writableWaiters?.resolve();
    this.#writableWaiters = undefined;
  }

  /**
   * `block` takes a record while the spool is under its bound (so it can pass it by at most one
   * record), which keeps `writable` an exact prediction of whether the next append waits. `drop`
   * makes the record fit, unless it alone is larger than the bound.
   */
  hasRoom(sizeBytes: number): boolean {
    if (this.#s.policy === 'block') return this.#s.bytes < this.#s.maxBytes;
    return this.#s.bytes === 0 || this.#s.bytes + sizeBytes <= this.#s.maxBytes;
  }

  /** The `block` policy: the append waits, in order, until there is room. Resolves with its seq. */
  wait(record: JobRecord, entry: Buffer): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#waiters.push({ record, entry, resolve, reject });
      this.updateWritable();
    });
  }

  /** The `drop` policy: deletes the oldest segments until `sizeBytes` fits. */
  dropFor(sizeBytes: number): void {
    while (!this.hasRoom(sizeBytes) && this.#s.bytes > 0) {
      const dropped = this.#host.discardOldest();
      const unacked = dropped.lastSeq - Math.max(dropped.firstSeq, this.#s.ackedSeq + 1) + 1;
      if (unacked > 0) this.#droppedRecords += unacked;
    }
  }

  /** Lets blocked appends in, in order, as far as the freed space allows. */
  admit(): void {
    let admitted = false;
    while (this.#waiters.length > 0) {
      const waiter = this.#waiters[0]!;
      if (!this.hasRoom(waiter.entry.length)) break;
      this.#waiters.shift();
      waiter.resolve(this.#host.accept(waiter.record, waiter.entry));
      admitted = true;
    }
    if (admitted) this.#host.scheduleFlush();
  }

  rejectWaiters(error: RjobError): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const waiter of waiters) waiter.reject(error);
  }

  /** Tells the producers once {@link writable} turned true again. */
  updateWritable(): void {
    const writable = this.writable;
    if (writable && !this.#wasWritable) {
      this.#wasWritable = true;
      this.#writableWaiters?.resolve();
      this.#writableWaiters = undefined;
      for (const listener of [...this.#writableListeners]) {
        try {
          listener();
        } catch {
          // A listener's bug must not wedge the spool.
        }
      }
    }
    this.#wasWritable = writable;
  }
}
