/** The seven streams a job writes to, as in PowerShell. */
export const STREAMS = ['output', 'error', 'warning', 'verbose', 'debug', 'information', 'progress'] as const;
export type StreamName = (typeof STREAMS)[number];

/** Payload of a `progress` record. */
export interface ProgressData {
  activity: string;
  status?: string;
  /** 0–100, or -1 when unknown. */
  percentComplete?: number;
}

/**
 * One thing a job wrote. A job's records carry one `seq` counter across all streams, so their
 * emission order survives even when they are read stream by stream.
 */
export interface JobRecord<T = unknown> {
  stream: StreamName;
  data: T;
  /** Position in the job's emission order, from 1, across all streams. */
  seq: number;
  /** Milliseconds since the epoch when the record was written. */
  timeMs: number;
  /** Id of the job that wrote it (a child's id when a parent is received). */
  jobId: number;
  /** Where the job ran: `localhost` or a computer name. */
  location: string;
  /**
   * Set on the synthetic error record that repeats a Failed job's reason on every receive; such a
   * record is not part of the job's buffer and has `seq` 0.
   */
  reason?: true;
}

export function isStreamName(value: unknown): value is StreamName {
  return typeof value === 'string' && (STREAMS as readonly string[]).includes(value);
}
