/**
 * What a job was started with (`job.start`'s type, definition and label), kept beside the job:
 * the label shows in its JobInfo, and `job.restart` runs the same work again. It is also what the
 * job store keeps as the job's `data`, so a job restored after an agent restart has it back.
 */
import type { Job } from '@rjob/core';
import { isPlainObject } from './wire.js';

export interface JobWork {
  type: string;
  definition: unknown;
  /** The user's free text for the job (`rjob start --label`). */
  label?: string;
  /** The ids of the jobs it waits for (`rjob start --after`). */
  after?: number[];
  /** Its job group (`rjob start --group`); absent: the unlimited default group. */
  group?: string;
  /**
   * True while the job waits for its turn (JobQueue): it never ran, so an agent restart puts it
   * back in the queue whatever state the old agent left it in.
   */
  waiting?: boolean;
}

const works = new WeakMap<Job, JobWork>();

export function rememberWork(job: Job, work: JobWork): void {
  works.set(job, work);
}

export function workOf(job: Job): JobWork | undefined {
  return works.get(job);
}

/** The work a stored job's `data` holds, when it is one (a group's data is not restartable). */
export function storedWork(data: unknown): JobWork | undefined {
  if (!isPlainObject(data) || typeof data.type !== 'string' || data.type === 'group') return undefined;
  if (!isPlainObject(data.definition)) return undefined;
  const work: JobWork = { type: data.type, definition: data.definition };
  if (typeof data.label === 'string') work.label = data.label;
  if (Array.isArray(data.after) && data.after.every((id) => Number.isSafeInteger(id))) {
    work.after = data.after as number[];
  }
  if (typeof data.group === 'string') work.group = data.group;
  if (data.waiting === true) work.waiting = true;
  return work;
}
