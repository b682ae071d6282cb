/**
 * The shape of the agent's RPC: a table from method name to handler. Each method family has its
 * module beside this one, with the checks on its params; AgentSession looks a request's method
 * up in the table and gives the handler its {@link SessionScope}.
 */
import type { Job, JobInfo, JobManager, SessionInfo, WireSelector } from '@rjob/core';
import type { ReliableChannel } from '@rjob/core/protocol';
import type { AgentControl } from '../agent-control.js';
import type { JobQueue } from '../job-queue.js';
import type { PumpSource } from '../subscription-pump.js';

/** Marker result for methods that answered on their own (so the session must not answer again). */
export const ANSWERED_LATER: unique symbol = Symbol('answered later');

/**
 * What a handler may see and do of its session. The session builds one for itself; a view's
 * jobs, records and queue are its host's, its subscriptions its own.
 */
export interface SessionScope extends PumpSource {
  readonly id: string;
  readonly identity: string;
  readonly jobs: JobManager;
  readonly queue: JobQueue;
  /** The session's working directory now (`session.configure` changes it). */
  readonly cwd: string;
  /** What `agent.info` / `agent.stop` know of the agent process (set by the server). */
  readonly control: AgentControl;
  info(job: Job): JobInfo;
  /** The session's own description (`session.info`). */
  sessionInfo(): SessionInfo;
  /** The identity's sessions, as the server sees them (`session.list`). */
  listSessions(): SessionInfo[];
  /** `session.claim`: see SessionMethods. */
  claimSession(sessionId: string): { sessionId: string; resumeSecret: string; info: SessionInfo };
  /** Resolves a wire selector to the jobs themselves, as JobManager does. */
  select(selector: WireSelector): Job[];
  /** Sends `job.state` events for the job and its children until each has finished. */
  watchState(job: Job): void;
  /** Applies checked `session.configure` fields and saves the session's persistent facts. */
  configure(changes: {
    name?: string;
    cwd?: string;
    env?: Record<string, string>;
    idleTimeoutMs?: number;
  }): void;
  /** `session.disconnect`: answers, then detaches the link once the client has the answer. */
  disconnect(call: MethodCall): typeof ANSWERED_LATER;
  /** `session.close`: refuses new work, stops the jobs, answers, then ends the session. */
  close(call: MethodCall): Promise<typeof ANSWERED_LATER>;
  /** Ends the session (as AgentSession.end). */
  end(reason: string): Promise<void>;
  /** Counts the session Busy (`availability`) while `work` runs: an invoke. */
  busy<T>(work: () => Promise<T>): Promise<T>;
}

/** One request, as a handler gets it. */
export interface MethodCall {
  readonly method: string;
  readonly params: unknown;
  readonly requestId: number;
  /** The channel that asked: answers go there (after a takeover, the new client never asked). */
  readonly channel: ReliableChannel;
}

/**
 * Handles one method: returns the result (or a promise of it), throws to answer with the error, or
 * returns {@link ANSWERED_LATER} when it answered on the channel itself.
 */
export type MethodHandler = (scope: SessionScope, call: MethodCall) => unknown;

/** Handlers by method name: one table per method family, joined in methods/index.ts. */
export type MethodTable = Readonly<Record<string, MethodHandler>>;
