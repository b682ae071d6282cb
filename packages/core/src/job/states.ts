import { ErrorCode, RjobError } from '../errors.js';

export const JobState = {
  NotStarted: 'NotStarted',
  Running: 'Running',
  Stopping: 'Stopping',
  /** A process job whose process group was stopped (SIGSTOP) on request, until it is resumed. */
  Suspended: 'Suspended',
  Disconnected: 'Disconnected',
  Completed: 'Completed',
  Failed: 'Failed',
  Stopped: 'Stopped',
} as const;
export type JobState = (typeof JobState)[keyof typeof JobState];

export const TERMINAL_STATES: ReadonlySet<JobState> = new Set(['Completed', 'Failed', 'Stopped']);

export function isTerminal(state: JobState): boolean {
  return TERMINAL_STATES.has(state);
}

// Legal moves. Terminal states have none: once a job ends it stays ended.
const TRANSITIONS: Record<JobState, readonly JobState[]> = {
  NotStarted: ['Running', 'Stopping', 'Stopped', 'Failed'],
  Running: ['Stopping', 'Disconnected', 'Suspended', 'Completed', 'Failed', 'Stopped'],
  Suspended: ['Running', 'Stopping', 'Completed', 'Failed', 'Stopped'],
  Stopping: ['Stopped', 'Completed', 'Failed'],
  Disconnected: ['Running', 'Stopping', 'Completed', 'Failed', 'Stopped'],
  Completed: [],
  Failed: [],
  Stopped: [],
};

export function canTransition(from: JobState, to: JobState): boolean {
  return TRANSITIONS[from].includes(to);
}

export function assertTransition(from: JobState, to: JobState): void {
  if (!canTransition(from, to)) {
    throw new RjobError(ErrorCode.InvalidStateTransition, `A job cannot go from ${from} to ${to}.`, {
      details: { from, to },
    });
  }
}
