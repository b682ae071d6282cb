/**
 * The spool's writer: brings the files in line with the in-memory state, one pass at a time.
 * Appended entries reach the OS within one event-loop turn, fsync is batched beside the passes,
 * the meta file follows the acknowledged position, and a disk that is full pauses the job's output
 * until space is back instead of failing it.
 */
import { open, rm } from 'node:fs/promises';
import { type JobRecord, RjobError } from '@rjob/core';
import { AgentErrorCode, diskFullError, isSpaceError } from '../errors.js';
import { reportIncident } from '../incidents.js';
import { DiskFullPause } from './disk-full.js';
import { dropReader } from './handle-cache.js';
import type { Segment } from './segment.js';
import { writeMeta } from './spool-recovery.js';
import type { SpoolState } from './spool-state.js';

/** How long a lazily acknowledged position may wait to be persisted. */
const LAZY_META_MS = 200;

/** What the writer needs of the rest of the spool. */
export interface WriterHost {
  /** Takes an encoded entry as the next record (the disk-full warning). */
  accept(record: JobRecord, entry: Buffer): number;
  /** Wakes followers: records were appended, or the spool's state changed. */
  changed(): void;
  /** Rejects appends that wait for room (the spool failed). */
  rejectAppends(error: RjobError): void;
  /** Tells producers when appends no longer have to wait. */
  updateWritable(): void;
}

/** The writer of one spool, on the state its appends and acknowledgements change. */
export class SpoolWriter {
  readonly #s: SpoolState;
  readonly #host: WriterHost;
  #writtenWaiters: Array<{ seq: number; resolve(): void; reject(error: unknown): void }> = [];
  #dirty = false;
  #pumping: Promise<void> | undefined;
  #flushScheduled = false;
  #metaDirty = false;
  /** The meta file must be rewritten on the next pass (not only eventually: see `ack`'s `lazy`). */
  #metaDue = false;
  #metaTimer: NodeJS.Timeout | undefined;
  /** The fsync pass running now, if any (see #syncPass). */
  #syncLane: Promise<void> | undefined;
  #dirDirty = false;
  #syncDue = false;
  #syncTimer: NodeJS.Timeout | undefined;
  /** Writes that fail for space (ENOSPC, EDQUOT) pause the output; see #pumpLoop. */
  readonly #space: DiskFullPause;

  constructor(state: SpoolState, host: WriterHost) {
    this.#s = state;
    this.#host = host;
    this.#space = new DiskFullPause(state, host);
  }

  /** True while writes fail for space and the job's output waits for it (see #pumpLoop). */
  get pausedForSpace(): boolean {
    return this.#space.paused;
  }

  /** The pass running now, if any. */
  get pumping(): Promise<void> | undefined {
    return this.#pumping;
  }

  /** Nothing buffered, acknowledged or doomed waits for a pass. */
  get idle(): boolean {
    return !this.#pumping && this.#s.pendingBytes === 0 && !this.#metaDirty && this.#s.doomed.length === 0;
  }

  /** The acknowledged position or the sealed flag changed; `due`: persist it with the next pass. */
  metaChanged(due: boolean): void {
    this.#metaDirty = true;
    if (due) this.#metaDue = true;
  }

  /** The next pass fsyncs (seal, sync, close). */
  requestSync(): void {
    this.#syncDue = true;
  }

  /** Ends a wait for space early (close, discard). */
  wakeSpace(): void {
    this.#space.wake();
  }

  /** Stops the timers of interval syncs and lazy meta writes. */
  stopTimers(): void {
    if (this.#syncTimer) clearTimeout(this.#syncTimer);
    this.#syncTimer = undefined;
    if (this.#metaTimer) clearTimeout(this.#metaTimer);
    this.#metaTimer = undefined;
  }

  /** The files are behind the state (a segment started or doomed): a running pass is followed by another. */
  markDirty(): void {
    this.#dirty = true;
  }

  /** The pass running now is the last: nothing is written after it (discard). */
  stopPump(): void {
    this.#dirty = false;
  }

  /** Rejects every read waiting for records to be written. */
  rejectWritten(error: unknown): void {
    const written = this.#writtenWaiters;
    this.#writtenWaiters = [];
    for (const waiter of written) waiter.reject(error);
  }

  /** Resolves once the pass and the fsync pass running now (which hold file handles) are done. */
  async finished(): Promise<void> {
    await this.#pumping?.catch(() => {});
    await this.#syncLane?.catch(() => {});
  }

  /** Closes every file handle of the spool's segments. */
  async closeFiles(): Promise<void> {
    for (const segment of [...this.#s.segments, ...this.#s.doomed]) {
      await segment.handle?.close().catch(() => {});
      segment.handle = undefined;
      dropReader(segment);
    }
  }

  /** Persists the acknowledged position within {@link LAZY_META_MS}. */
  scheduleMeta(): void {
    if (this.#metaTimer || this.#s.closed) return;
    this.#metaTimer = setTimeout(() => {
      this.#metaTimer = undefined;
      this.#metaDue = true;
      this.kick().catch(() => {});
    }, LAZY_META_MS);
    this.#metaTimer.unref();
  }

  /** Resolves once every record up to `seq` has been written (not necessarily synced). */
  untilWritten(seq: number): Promise<void> {
    if (this.#s.writtenSeq >= seq) return Promise.resolve();
    if (this.#s.failure) return Promise.reject(this.#s.failure);
    const written = new Promise<void>((resolve, reject) =>
      this.#writtenWaiters.push({ seq, resolve, reject }),
    );
    // A pump pass that started before the append may not include it: this kick runs another.
    this.kick().catch(() => {});
    return written;
  }

  /** Records up to `seq` are written (or, deleted unwritten, never will be). */
  wrote(seq: number): void {
    if (seq > this.#s.writtenSeq) this.#s.writtenSeq = seq;
    if (this.#writtenWaiters.length === 0) return;
    const due = this.#writtenWaiters.filter((waiter) => waiter.seq <= this.#s.writtenSeq);
    if (due.length === 0) return;
    this.#writtenWaiters = this.#writtenWaiters.filter((waiter) => waiter.seq > this.#s.writtenSeq);
    for (const waiter of due) waiter.resolve();
  }

  /** A pass within one event-loop turn. */
  scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      // A failure is kept in #failure and reported by the next call.
      this.kick().catch(() => {});
    });
  }

  /** Resolves after a pump pass that started after this call has finished. */
  kick(): Promise<void> {
    if (this.#s.failure) return Promise.reject(this.#s.failure);
    if (this.#s.released) return Promise.resolve();
    this.#dirty = true;
    this.#pumping ??= this.#pumpLoop();
    return this.#pumping;
  }

  /**
   * Runs passes until the files are in line. A pass that fails for space (ENOSPC, EDQUOT) is not a
   * failure: the spool pauses (appends fill the write buffer, then wait, which pauses the job),
   * puts a warning record in the job's stream, reports the pause, and retries with backoff until
   * the write goes through; then nothing was lost. Only closing the spool while the disk is still
   * full gives up (ERR_DISK_FULL, and what was not written is reported lost).
   */
  async #pumpLoop(): Promise<void> {
    try {
      while (this.#dirty) {
        this.#dirty = false;
        try {
          await this.#pumpOnce();
        } catch (error) {
          if (!isSpaceError(error) || this.#s.closed || this.#s.released) throw error;
          if (this.#space.pause(error)) {
            // Readers waiting for records that cannot be written now read what is.
            const written = this.#writtenWaiters;
            this.#writtenWaiters = [];
            for (const waiter of written) waiter.resolve();
            this.#host.changed();
          }
          await this.#space.backoff();
          if (this.#s.released) return;
          this.#dirty = true;
          continue;
        }
        if (this.#space.paused && !this.#dirty) {
          this.#space.resume();
          this.#host.changed();
        }
      }
    } catch (error) {
      throw this.#fail(error);
    } finally {
      this.#pumping = undefined;
    }
  }

  /** The disk failed: every waiter learns it, and so does every later call. */
  #fail(error: unknown): RjobError {
    if (!this.#s.failure && isSpaceError(error)) {
      const unwritten = this.#s.lastSeq - this.#s.writtenSeq;
      if (unwritten > 0) {
        reportIncident({
          kind: 'lost',
          code: AgentErrorCode.DiskFull,
          subject: `spool ${this.#s.dir}`,
          detail: `closed while the disk was still full: ${unwritten} record(s) after seq ${this.#s.writtenSeq} were never written`,
        });
      }
    }
    this.#s.failure ??= isSpaceError(error)
      ? diskFullError(`the spool ${this.#s.dir}`, error)
      : new RjobError(AgentErrorCode.SpoolIo, `Spool ${this.#s.dir} failed: ${(error as Error).message}`, {
          cause: error,
          details: { dir: this.#s.dir },
        });
    this.#host.rejectAppends(this.#s.failure);
    const written = this.#writtenWaiters;
    this.#writtenWaiters = [];
    for (const waiter of written) waiter.reject(this.#s.failure);
    this.#host.changed();
    return this.#s.failure;
  }

  /**
   * An fsync pass, after any one in progress. Passes run beside the pump, not in it: a full
   * segment's fsync took about 15 ms here, and appends and reads waiting for it cost a quarter of
   * a bulk job's throughput. Only seal, sync and close wait for one (through the pump's #syncDue).
   */
  #syncPass(): Promise<void> {
    const previous = this.#syncLane ?? Promise.resolve();
    const pass = previous.catch(() => {}).then(() => this.#syncSegments());
    this.#syncLane = pass;
    const clear = (): void => {
      if (this.#syncLane === pass) this.#syncLane = undefined;
    };
    pass.then(clear, clear);
    return pass;
  }

  async #syncSegments(): Promise<void> {
    if (this.#s.released) return;
    for (const segment of [...this.#s.segments]) {
      if (segment.handle && segment.unsynced) {
        segment.unsynced = false;
        try {
          await segment.handle.sync();
        } catch (error) {
          segment.unsynced = true;
          throw error;
        }
      }
      // A closed segment, fully written and now synced, is done with: release its file.
      if (
        segment.sealed &&
        !segment.settled &&
        segment.handle &&
        !segment.unsynced &&
        segment.pending.length === 0 &&
        segment.writtenBytes === segment.bytes
      ) {
        const handle = segment.handle;
        segment.handle = undefined;
        segment.settled = true;
        await handle.close();
      }
    }
    if (this.#dirDirty) {
      this.#dirDirty = false;
      const dir = await open(this.#s.dir, 'r');
      try {
        await dir.sync();
      } finally {
        await dir.close();
      }
    }
  }

  async #pumpOnce(): Promise<void> {
    let wrote = false;
    // In order: a closed segment is completely written before its successor gets data, so after
    // the agent process dies only the last segment can have a torn tail. (After a power cut, data
    // not yet fsynced by a sync pass may be torn anywhere; reads of such a file check every CRC
    // and report ERR_SPOOL_CORRUPT at the tear.)
    for (const segment of [...this.#s.segments]) wrote = (await this.#writeSegment(segment)) || wrote;
    // The acknowledged position is persisted before the segments it frees are deleted, so a
    // restart never mistakes acknowledged records for dropped ones.
    // A deleted segment must never be ahead of the persisted position: a restart would read the
    // missing records as dropped.
    if (this.#metaDirty && (this.#metaDue || this.#syncDue || this.#s.closed || this.#s.doomed.length > 0)) {
      this.#metaDirty = false;
      this.#metaDue = false;
      try {
        await writeMeta(this.#s.dir, { version: 1, ackedSeq: this.#s.ackedSeq, sealed: this.#s.sealed });
      } catch (error) {
        // Written again by the retry (see #pumpLoop).
        this.#metaDirty = true;
        this.#metaDue = true;
        throw error;
      }
      this.#dirDirty = true;
    }
    const doomed = this.#s.doomed;
    this.#s.doomed = [];
    // A sync pass may be using a doomed segment's file.
    if (doomed.length > 0) await this.#syncLane?.catch(() => {});
    for (const segment of doomed) {
      segment.pending = [];
      await segment.handle?.close();
      segment.handle = undefined;
      dropReader(segment);
      if (segment.created) await rm(segment.path, { force: true });
      this.#dirDirty = true;
    }
    if (this.#syncDue) {
      this.#syncDue = false;
      try {
        await this.#syncPass();
      } catch (error) {
        this.#syncDue = true;
        throw error;
      }
    } else if (
      (wrote || this.#dirDirty) &&
      this.#s.syncIntervalMs > 0 &&
      !this.#syncTimer &&
      !this.#s.closed
    ) {
      this.#syncTimer = setTimeout(() => {
        this.#syncTimer = undefined;
        this.#syncPass().catch((error) => {
          if (!isSpaceError(error)) return this.#fail(error);
          // The pump retries it with the next pass (and pauses until space returns).
          this.#syncDue = true;
          this.kick().catch(() => {});
        });
      }, this.#s.syncIntervalMs);
      this.#syncTimer.unref();
    }
    this.#host.updateWritable();
  }

  /**
   * After a write of `buffers` (one entry each) that put only `bytesWritten` bytes on disk: the
   * whole entries among them count as written, a partial one is cut off the file, and the others
   * go back to the front of the segment's queue.
   */
  async #requeue(segment: Segment, buffers: Buffer[], bytesWritten: number): Promise<void> {
    let done = 0;
    let count = 0;
    while (count < buffers.length && done + buffers[count]!.length <= bytesWritten) {
      done += buffers[count]!.length;
      count++;
    }
    if (done < bytesWritten) await segment.handle!.truncate(segment.writtenBytes + done);
    if (count > 0) {
      segment.writtenBytes += done;
      segment.writtenLastSeq += count;
      segment.unsynced = true;
      this.wrote(segment.writtenLastSeq);
    }
    // A segment deleted meanwhile (acknowledged or dropped) needs none of it.
    if (!this.#s.segments.includes(segment)) return;
    const rest = buffers.slice(count);
    const restBytes = rest.reduce((sum, buffer) => sum + buffer.length, 0);
    segment.pending = [...rest, ...segment.pending];
    segment.pendingBytes += restBytes;
    this.#s.pendingBytes += restBytes;
  }

  /** Creates, writes, and (once sealed) fsyncs and closes one segment. True if it wrote data. */
  async #writeSegment(segment: Segment): Promise<boolean> {
    if (segment.settled) return false;
    if (!segment.handle) {
      segment.handle = await open(segment.path, segment.created ? 'r+' : 'w', 0o600);
      if (!segment.created) this.#dirDirty = true;
      segment.created = true;
    }
    let wrote = false;
    if (segment.pending.length > 0) {
      const buffers = segment.pending;
      const sizeBytes = segment.pendingBytes;
      const lastSeq = segment.lastSeq;
      segment.pending = [];
      segment.pendingBytes = 0;
      this.#s.pendingBytes -= sizeBytes;
      // Entries from one appendMany are views of one buffer: written as they are, not copied.
      let bytesWritten = 0;
      let failure: unknown;
      try {
        ({ bytesWritten } = await segment.handle.writev(coalesce(buffers), segment.writtenBytes));
      } catch (error) {
        failure = error;
      }
      if (bytesWritten !== sizeBytes) {
        // The disk filled up (a short write; the next one says why) or the write failed: keep
        // the whole entries that made it, cut a partial one off, and queue the rest again.
        await this.#requeue(segment, buffers, bytesWritten);
        if (failure) throw failure;
        this.#dirty = true;
        return true;
      }
      segment.writtenBytes += sizeBytes;
      segment.writtenLastSeq = lastSeq;
      segment.unsynced = true;
      wrote = true;
      this.wrote(lastSeq);
    }
    // A closed segment is fsynced and released by the next sync pass (see #syncPass).
    return wrote;
  }
}

/** Joins views that lie back to back in one buffer (entries of one appendMany) into one view. */
function coalesce(buffers: Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  // The run so far: `first` and the length it has grown to (a view is made once, at its end).
  let first = buffers[0]!;
  let length = first.length;
  const close = (): void => {
    out.push(length === first.length ? first : Buffer.from(first.buffer, first.byteOffset, length));
  };
  for (let i = 1; i < buffers.length; i++) {
    const next = buffers[i]!;
    if (next.buffer === first.buffer && first.byteOffset + length === next.byteOffset) {
      length += next.length;
    } else {
      close();
      first = next;
      length = next.length;
    }
  }
  close();
  return out;
}
