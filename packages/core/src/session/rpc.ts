/**
 * The methods and events a session speaks over protocol v1's `request` / `response` / `event`
 * messages, shared by the session client (core) and the agent. Types only: the agent implements
 * the methods, the client calls them. Every message rides the session's ReliableChannel, so
 * records sent as events are delivered exactly once, in order, across reconnects.
 */
import type { SerializedError } from '../errors.js';
import type { GetFilter } from '../job/job-manager.js';
import type { JobRecord } from '../job/records.js';
import type { JobState } from '../job/states.js';

/** A job as it crosses the wire (dates as epoch ms, reason serialized). */
export interface JobInfo {
  id: number;
  instanceId: string;
  name: string;
  type: string;
  state: JobState;
  reason?: SerializedError;
  hasMoreData: boolean;
  location: string;
  command: string;
  beginTimeMs?: number;
  endTimeMs?: number;
  childIds: number[];
}

/** Session state as PowerShell's PSSession: Opened, Disconnected, Broken, Closed. */
export type SessionState = 'Opened' | 'Disconnected' | 'Broken' | 'Closed';
export type SessionAvailability = 'None' | 'Available' | 'Busy';

export interface SessionInfo {
  sessionId: string;
  name: string;
  /** The agent's computer name. */
  computerName: string;
  state: SessionState;
  availability: SessionAvailability;
  cwd: string;
  createdAtMs: number;
  lastSeenAtMs: number;
  /** Jobs in the session that are not finished. */
  runningJobs: number;
}

/** Where work runs inside the agent: a job type name or alias and its definition. */
export interface WorkRequest {
  /** `process` (default) or `thread`, or another type the agent registered. */
  type?: string;
  definition: unknown;
  name?: string;
}

/** A JobManager selector as it crosses the wire. */
export type WireSelector = number | string | Array<number | string>;

/** Method name → params and result. */
export interface SessionMethods {
  /** This session's own description. */
  'session.info': { params: undefined; result: SessionInfo };
  /** Names the session, sets its working directory, environment, idle expiry. */
  'session.configure': {
    params: { name?: string; cwd?: string; env?: Record<string, string>; idleTimeoutMs?: number };
    result: SessionInfo;
  };
  /** Sessions this identity holds on the agent (any state), to find one to reconnect to. */
  'session.list': { params: undefined; result: SessionInfo[] };
  /** The client is leaving on purpose: the session stays, Disconnected, its jobs go on. */
  'session.disconnect': { params: undefined; result: SessionInfo };
  /** Ends the session: stops and removes its jobs. */
  'session.close': { params: undefined; result: undefined };

  /** Start-Job inside the session; the job and its results stay on the agent. */
  'job.start': { params: WorkRequest; result: JobInfo };
  'job.get': { params: GetFilter; result: JobInfo[] };
  /** Receive-Job: returns (and unless keep consumes) buffered records; a Failed job's reason last. */
  'job.receive': { params: { selector: WireSelector; keep?: boolean }; result: JobRecord[] };
  /** Wait-Job: resolves when finished; a timeout returns []. */
  'job.wait': { params: { selector: WireSelector; any?: boolean; timeoutMs?: number }; result: JobInfo[] };
  'job.stop': { params: { selector: WireSelector }; result: JobInfo[] };
  'job.remove': { params: { selector: WireSelector; force?: boolean }; result: JobInfo[] };
  /**
   * Streams a job's records as `job.record` events tagged with `subscriptionId` (consuming them
   * unless keep), then one `job.end` event. Resolves at once with the job's info. Used by
   * RemoteJob (AsJob) and `receive --wait`. A resumed session keeps its subscriptions.
   * With `batch`, records come as `job.records` events instead, many per event.
   */
  'job.subscribe': {
    params: { selector: WireSelector; subscriptionId: string; keep?: boolean; batch?: boolean };
    result: JobInfo[];
  };
  'job.unsubscribe': { params: { subscriptionId: string }; result: undefined };

  /**
   * Invoke-Command: runs work as a temporary job, streaming its records as `job.record` events
   * with the given subscriptionId, then `job.end`; the response comes once it ended, with the
   * final info. The temporary job is removed when everything was delivered. With `batch`,
   * records come as `job.records` events, as for `job.subscribe`.
   */
  invoke: { params: WorkRequest & { subscriptionId: string; batch?: boolean }; result: JobInfo };
}

export type SessionMethod = keyof SessionMethods;
export type MethodParams<M extends SessionMethod> = SessionMethods[M]['params'];
export type MethodResult<M extends SessionMethod> = SessionMethods[M]['result'];

/** Event name → data. */
export interface SessionEvents {
  'job.record': { subscriptionId: string; record: JobRecord };
  /**
   * Several records of one subscription, in order (sent instead of `job.record` to a client that
   * subscribed or invoked with `batch: true`). Never empty.
   */
  'job.records': { subscriptionId: string; records: JobRecord[] };
  /** The subscribed jobs finished and every record was sent. */
  'job.end': { subscriptionId: string; jobs: JobInfo[] };
  /** A job in the session changed state (sent to every attached client). */
  'job.state': { job: JobInfo };
}

export type SessionEvent = keyof SessionEvents;
