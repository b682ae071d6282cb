/**
 * A spool on a full disk: writes that fail for space (ENOSPC, EDQUOT) pause the job's output
 * instead of failing it. The pause is reported, a warning goes into the job's own stream where
 * its output stopped, and the writer retries with backoff until space is back.
 */
import type { JobRecord } from '@rjob/core';
import { AgentErrorCode } from '../errors.js';
import { reportIncident } from '../incidents.js';
import { encodeEntry } from './segment-format.js';
import type { SpoolState } from './spool-state.js';

/** A write that failed for space is retried after this, doubling up to {@link SPACE_RETRY_MAX_MS}. */
const SPACE_RETRY_MIN_MS = 50;
const SPACE_RETRY_MAX_MS = 2000;

/** The disk-full pause of one spool's writer. */
export class DiskFullPause {
  readonly #s: SpoolState;
  readonly #host: { accept(record: JobRecord, entry: Buffer): number };
  /** Since when writes fail for space. */
  #since: Date | undefined;
  #retryMs = SPACE_RETRY_MIN_MS;
  /** Ends the current wait between retries early (close, discard). */
  #wake: (() => void) | undefined;

  constructor(state: SpoolState, host: { accept(record: JobRecord, entry: Buffer): number }) {
    this.#s = state;
    this.#host = host;
  }

  get paused(): boolean {
    return this.#since !== undefined;
  }

  /** Ends the current wait between retries now. */
  wake(): void {
    this.#wake?.();
  }

  /**
   * A write failed for space: reports it and puts the warning in the job's stream. False when the
   * output was paused already.
   */
  pause(error: unknown): boolean {
    if (this.#since) return false;
    this.#since = new Date();
    this.#retryMs = SPACE_RETRY_MIN_MS;
    const code = String((error as { code?: unknown }).code ?? 'ENOSPC');
    reportIncident({
      kind: 'disk-full',
      code: AgentErrorCode.DiskFull,
      subject: `spool ${this.#s.dir}`,
      detail: `writing failed (${code}): the job's output is paused and resumes, with nothing lost, once space is freed`,
    });
    if (!this.#s.closed) {
      // In the job's own stream, where its output stopped: written first once space returns.
      const warning: JobRecord = {
        stream: 'warning',
        data: `rjob: the disk holding the agent's state is full (${code}); this job's output was paused at ${this.#since.toISOString()} until space was freed. Nothing was lost. (${AgentErrorCode.DiskFull})`,
        seq: this.#s.lastSeq + 1,
        timeMs: this.#since.getTime(),
        jobId: this.#s.envelope.jobId,
        location: this.#s.envelope.location,
      };
      this.#host.accept(warning, encodeEntry(warning));
    }
    return true;
  }

  /** Writes go through again: reports it. */
  resume(): void {
    const since = this.#since!;
    this.#since = undefined;
    reportIncident({
      kind: 'disk-space-back',
      code: AgentErrorCode.DiskFull,
      subject: `spool ${this.#s.dir}`,
      detail: `space is back: the output paused at ${since.toISOString()} is written, nothing was lost`,
    });
  }

  /** Waits before the next retry, longer each time, or until {@link wake}. */
  async backoff(): Promise<void> {
    const waitMs = this.#retryMs;
    this.#retryMs = Math.min(this.#retryMs * 2, SPACE_RETRY_MAX_MS);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, waitMs);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    });
    this.#wake = undefined;
  }
}
