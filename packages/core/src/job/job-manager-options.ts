/** What {@link JobManager}'s verbs take: options, filters and job selectors. */
import type { Job } from './job.js';
import type { JobManager } from './job-manager.js';
import type { JobType } from './job-type.js';
import type { JobState } from './states.js';

export interface JobManagerOptions {
  /** Job types this manager can start. More can be added with {@link JobManager.register}. */
  types?: JobType[];
  /**
   * Undelivered bytes one job may hold before its producer is paused until a receiver drains it
   * (the block policy). Default 64 MiB.
   */
  maxBufferedBytes?: number;
  /** Location stamped on local jobs. Default `localhost`. */
  location?: string;
}

export interface StartOptions {
  /** Default `Job<id>`. */
  name?: string;
  /** Overrides the job type's description in the Command column. */
  command?: string;
  /** Default: the manager's location. */
  location?: string;
  /** Default: a new random UUID. (An agent gives a job it puts back after a restart its own.) */
  instanceId?: string;
}

export interface ChildSpec<Definition = unknown> {
  type: string | JobType<Definition>;
  definition: Definition;
  /** The child's Location column, e.g. the computer it runs on. */
  location?: string;
  name?: string;
  /**
   * The child's Type column when it should not be the job type's name: a fan-out child run by a
   * process job is still one host's part of a RemoteJob. Default: the job type's name.
   */
  typeName?: string;
  /** The child's Command column, e.g. the user's command rather than what runs it. */
  command?: string;
}

export interface StartGroupOptions {
  name?: string;
  /** The parent's Type column. Default: the first child's type. */
  type?: string;
  command?: string;
  /** Default: the children's locations joined with commas. */
  location?: string;
  children: ChildSpec[];
  /** How many children run at once; the rest wait in NotStarted. Default 32. */
  throttleLimit?: number;
}

/** Who a job was, for {@link JobManager.restore}: its id and instance id come back with it. */
export interface RestoredIdentity {
  id: number;
  instanceId: string;
  /** The times it had; otherwise set as it runs and ends again. */
  beginTime?: Date;
  endTime?: Date;
}

export interface RestoreOptions extends Omit<StartOptions, 'instanceId'>, RestoredIdentity {}

export interface RestoreGroupOptions extends StartGroupOptions, RestoredIdentity {
  /** Each child's identity, in the order of `children`. */
  childIdentities: RestoredIdentity[];
}

export interface GetFilter {
  ids?: number[];
  /** Names; `*` and `?` are wildcards. */
  names?: string[];
  instanceIds?: string[];
  state?: JobState | JobState[];
  /** Job type name or alias. */
  type?: string;
  /** Command text; `*` and `?` are wildcards. */
  command?: string;
  /** Also list child jobs. Default false. */
  includeChildren?: boolean;
}

/** Names a job: its id, its name (wildcards allowed), its instance id, or the job itself. */
export type JobSelector = number | string | Job | ReadonlyArray<number | string | Job>;

export interface ReceiveOptions {
  /** Leave what is returned in the job so it can be received again. Default false. */
  keep?: boolean;
  /** Wait until the job (every job selected) has finished, returning everything. Default false. */
  wait?: boolean;
  /** With `wait`: remove the jobs once everything was delivered. */
  autoRemove?: boolean;
}

export interface ReceiveStreamOptions {
  keep?: boolean;
  /** Remove the jobs once the stream has delivered everything. */
  autoRemove?: boolean;
}

export interface WaitOptions {
  /** Return as soon as one job finishes. Default false. */
  any?: boolean;
  /** Give up after this long and return nothing. Default: wait forever. */
  timeoutMs?: number;
}

export interface RemoveOptions {
  /** Stop running jobs first instead of refusing them. Default false. */
  force?: boolean;
}
