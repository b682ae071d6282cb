/**
 * The methods and events a session speaks over protocol v1's `request` / `response` / `event`
 * messages, shared by the session client (core) and the agent. Types only: the agent implements
 * the methods, the client calls them. Every message rides the session's ReliableChannel, so
 * records sent as events are delivered exactly once, in order, across reconnects.
 */
import type { SerializedError } from '../errors.js';
import type { JobColumns } from '../job/job.js';
import type { GetFilter } from '../job/job-manager-options.js';
import type { JobState } from '../job/states.js';
import type { RelayRequest } from '../protocol/messages.js';

/** A job as it crosses the wire (dates as epoch ms, reason serialized). */
export interface JobInfo extends JobColumns {
  state: JobState;
  reason?: SerializedError;
  hasMoreData: boolean;
  /** The user's free text for the job, given at start (`WorkRequest.label`). */
  label?: string;
  /** The jobs it waits for (`WorkRequest.after`), by id. */
  after?: number[];
  /** Its job group, when it was started in one (`WorkRequest.group`). */
  group?: string;
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
  /** Free text shown with the job (JobInfo.label) and kept with it across agent restarts. */
  label?: string;
  /**
   * Jobs (ids or names of the same job table) this one waits for: it stays NotStarted until every
   * one Completed, and fails with ERR_DEPENDENCY_FAILED when one Failed or was Stopped. An unknown
   * one refuses the start (ERR_JOB_NOT_FOUND).
   */
  after?: Array<number | string>;
  /**
   * The agent's job group the job runs in (`group.add`): it waits in NotStarted while the group's
   * `parallel` jobs run. An unknown group refuses the start (ERR_GROUP_NOT_FOUND).
   */
  group?: string;
  /**
   * Makes the start idempotent: a `job.start` with a key the agent saw recently for the same job
   * table answers with the job that key started instead of starting another (a request repeated
   * after its answer was lost). Any unique string, e.g. a UUID per user action.
   */
  requestKey?: string;
}

/** One child of a `job.startGroup`: work as for `job.start`, plus where it runs. */
export interface GroupChildRequest extends WorkRequest {
  /** The child's Location column (e.g. the host it works on). Default: the agent's. */
  location?: string;
  /** The child's Type column. Default: its job type's name. */
  typeName?: string;
  /** The child's Command column. Default: its job type's description of the definition. */
  command?: string;
}

/** A job group of the agent (`rjob group list`). */
export interface JobGroupInfo {
  name: string;
  /** How many of its jobs may run at once; `null` for the unlimited `default` group. */
  parallel: number | null;
  running: number;
  waiting: number;
}

/** A parent job with one child per entry (a fan-out), as JobManager.startGroup takes it. */
export interface GroupRequest {
  name?: string;
  /** The parent's Type column. Default: the first child's type. */
  type?: string;
  /** The parent's Command column. Default: the first child's. */
  command?: string;
  /** The parent's Location column. Default: the children's locations joined with commas. */
  location?: string;
  /** How many children run at once; the rest wait in NotStarted. */
  throttleLimit?: number;
  children: GroupChildRequest[];
}

/** What `job.receiveToFile` did. */
export interface ReceiveToFileResult {
  /** The absolute path written, on the agent's machine (`~/` and relative paths resolved). */
  path: string;
  /** Output records written, one line each. */
  records: number;
  /** Bytes written to the file. */
  bytes: number;
  /**
   * The records of every other stream (error, warning, verbose, debug, information, progress, a
   * Failed job's reason), in order, as runs of record entries ({@link PackedRecordRuns}). A
   * redirect takes only the output stream, as in PowerShell; these are consumed with it and handed
   * back for the caller to show, so nothing is lost.
   */
  other: Uint8Array[];
}

/**
 * Records in the one form they cross the wire in: runs of consecutive record entries (`@rjob/core`'s
 * record-entries codec, the bytes the agent's spool holds them as), each run the records of one job
 * numbered without a gap, as one `job.packed` event carries them. `decodeRecordRuns` reads them.
 */
export interface PackedRecordRuns {
  entries: Uint8Array[];
}

/** A JobManager selector as it crosses the wire. */
export type WireSelector = number | string | Array<number | string>;

/** A session the agent holds for its clients (`rjob session new`), as `hosted.*` describe it. */
export interface HostedSessionInfo {
  sessionId: string;
  /** The name the client gave it. */
  name: string;
  /** Where it lives, as the user wrote it. */
  target: string;
  /** Of the agent's connection to it. */
  state: SessionState;
  /** The remote agent's computer name, once connected. */
  remoteHost?: string;
  /** Why it is Disconnected or Broken. */
  reason?: SerializedError;
  /** Its jobs (ids or names) that RemoteJobs of the agent mirror: their records go to those. */
  mirroredJobs?: Array<number | string>;
}

/** Where `hosted.open` opens a session, and how to reach it (as RelayRequest's settings). */
export interface HostedOpenRequest {
  target: string;
  name: string;
  env?: Record<string, string>;
  cwd?: string;
  connectTimeoutMs?: number;
}

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
  /**
   * Connect-PSSession -InstanceId from another client: gives the caller a new resume secret for
   * another Disconnected session of the same identity (the old secret stops working). A session
   * a client is attached to is refused (ERR_SESSION_IN_USE); an unknown one is ERR_SESSION_NOT_FOUND.
   */
  'session.claim': {
    params: { sessionId: string };
    result: { sessionId: string; resumeSecret: string; info: SessionInfo };
  };

  /** Start-Job inside the session; the job and its results stay on the agent. */
  'job.start': { params: WorkRequest; result: JobInfo };
  /**
   * Starts a parent job with one child job per entry, at most `throttleLimit` running at once; the
   * parent's state follows its children's, `job.get` with `includeChildren` lists them, and
   * `job.receive` / `job.subscribe` of the parent give the children's records.
   */
  'job.startGroup': { params: GroupRequest; result: JobInfo };
  'job.get': { params: GetFilter; result: JobInfo[] };
  /**
   * Receive-Job in one answer: the records the jobs hold (consumed unless keep, once the client
   * acknowledged the answer), packed; a Failed job's reason last. Bounded by the frame size;
   * `job.subscribe` with `follow: false` streams any number.
   */
  'job.receive': { params: { selector: WireSelector; keep?: boolean }; result: PackedRecordRuns };
  /**
   * `Receive-Job … > path` on the agent's side: receives as `job.receive` does and writes the
   * output-stream records to `path` as the agent's user, one line each (`append` adds to the file
   * instead of replacing it). Nothing is consumed unless the write succeeded.
   */
  'job.receiveToFile': {
    params: { selector: WireSelector; path: string; keep?: boolean; append?: boolean };
    result: ReceiveToFileResult;
  };
  /** Wait-Job: resolves when finished; a timeout returns []. */
  'job.wait': { params: { selector: WireSelector; any?: boolean; timeoutMs?: number }; result: JobInfo[] };
  'job.stop': { params: { selector: WireSelector }; result: JobInfo[] };
  'job.remove': { params: { selector: WireSelector; force?: boolean }; result: JobInfo[] };
  /**
   * Runs finished jobs again, each as a new job with the same type, definition (command, working
   * directory, environment), name and label. A job that is not finished is refused
   * (ERR_JOB_RUNNING); one whose definition the agent does not hold (a group) is refused
   * (ERR_INVALID_ARGUMENT). Returns the new jobs, in the order of the selected ones.
   */
  'job.restart': { params: { selector: WireSelector }; result: JobInfo[] };
  /**
   * Writes `data` to one running job's stdin (a process job started with `stdinOpen`); with
   * `end`, closes its stdin afterwards. Resolves once the bytes are in the pipe. Refuses a job
   * that is not running (ERR_JOB_NOT_RUNNING) or has no open stdin (ERR_STDIN_CLOSED).
   */
  'job.send': {
    params: { selector: WireSelector; data?: string | Uint8Array; end?: boolean };
    result: JobInfo;
  };
  /** The agent's job groups, the unlimited `default` first. */
  'group.list': { params: undefined; result: JobGroupInfo[] };
  /** Adds a group whose jobs run at most `parallel` at once (ERR_INVALID_ARGUMENT if it exists). */
  'group.add': { params: { name: string; parallel: number }; result: JobGroupInfo };
  /** Changes a group's limit; waiting jobs start at once if the new limit lets them. */
  'group.set': { params: { name: string; parallel: number }; result: JobGroupInfo };
  /** Removes a group without running or waiting jobs (else ERR_GROUP_IN_USE). */
  'group.remove': { params: { name: string }; result: JobGroupInfo };
  /** Suspends running process jobs (SIGSTOP to the process group): they show Suspended. */
  'job.suspend': { params: { selector: WireSelector }; result: JobInfo[] };
  /** Lets Suspended jobs go on (SIGCONT): Running again. */
  'job.resume': { params: { selector: WireSelector }; result: JobInfo[] };
  /**
   * Streams a job's records as `job.packed` events tagged with `subscriptionId` (consuming them
   * unless keep), then one `job.end` event. Resolves at once with the job's info. Used by
   * RemoteJob (AsJob) and `receive --wait`. A resumed session keeps its subscriptions.
   */
  'job.subscribe': {
    params: {
      selector: WireSelector;
      subscriptionId: string;
      keep?: boolean;
      /**
       * Keep streaming as the jobs write, until they finished (Receive-Job -Wait). Default true.
       * False streams what the jobs hold now, then `job.end` (Receive-Job), in bounded batches.
       */
      follow?: boolean;
      /**
       * The client acknowledges records with `job.ack` as its receiver takes them; only those are
       * consumed. Records sent but never acknowledged (the client died, cancelled, was taken over)
       * stay on the agent for the next receive. Default false: consumed once the channel
       * acknowledged the event that carried them.
       */
      clientAck?: boolean;
    };
    result: JobInfo[];
  };
  /**
   * Consumes records a `clientAck` subscription sent: for each leaf job, every record up to `seq`
   * (cumulative; never past what was sent). Acks for a subscription that ended are ignored.
   */
  'job.ack': {
    params: { subscriptionId: string; acks: Array<{ jobId: number; seq: number }> };
    result: undefined;
  };
  'job.unsubscribe': { params: { subscriptionId: string }; result: undefined };

  /**
   * Invoke-Command: runs work as a temporary job, streaming its records as `job.packed` events
   * with the given subscriptionId, then `job.end`; the response comes once it ended, with the
   * final info. The temporary job is removed when everything was delivered.
   */
  invoke: {
    params: WorkRequest & { subscriptionId: string };
    result: JobInfo;
  };

  /** The agent process: its software (as in `welcome`), pid, uptime, and the caller's sessions and jobs. */
  'agent.info': { params: undefined; result: AgentProcessInfo };
  /**
   * Asks the agent daemon to stop as on SIGTERM, once this answer (its info) arrived: its jobs end
   * as on any agent stop, its sessions' state is kept. An agent embedded in a program refuses
   * (ERR_AGENT_STOP_UNSUPPORTED).
   */
  'agent.stop': { params: undefined; result: AgentProcessInfo };

  /**
   * The agent opens a session on `target` through its transports and holds it (New-PSSession
   * in the user's job host): clients reach it with a relay (OpenMessage.relay) over the agent's
   * open connection. Answers with the credentials to keep, and the remote session's info.
   */
  'hosted.open': {
    params: HostedOpenRequest;
    result: { sessionId: string; resumeSecret: string; info: SessionInfo };
  };
  /** Connects a held session (or holds one a client names), resuming its jobs' streams. */
  'hosted.connect': { params: RelayRequest; result: SessionInfo };
  /** Leaves a held session Disconnected (its jobs go on remotely); RemoteJobs in it show Disconnected. */
  'hosted.disconnect': { params: { sessionId: string }; result: HostedSessionInfo | null };
  /** Closes a session (Remove-PSSession: its remote jobs stop and go), connecting it first if needed. */
  'hosted.close': { params: RelayRequest; result: undefined };
  /** The sessions the agent holds for this identity. */
  'hosted.list': { params: undefined; result: HostedSessionInfo[] };
}

/** What `agent.info` says of the agent's plugins (absent from agents before plugins). */
export interface AgentPluginInfo {
  /** The job types the agent starts (`job.start`'s `type`: a name or an alias), plugins' included. */
  jobTypes: { name: string; aliases: string[] }[];
  /** Its target transports, in the order they are tried (the first that accepts a target wins). */
  transports: { name: string; scheme?: string }[];
  /** Plugins its configuration named that could not be loaded, each with a coded reason. */
  pluginErrors: { plugin: string; code: string; message: string }[];
}

/** `agent.info`'s answer. */
export interface AgentProcessInfo extends Partial<AgentPluginInfo> {
  software: string;
  pid: number;
  startedAtMs: number;
  uptimeMs: number;
  /** Sessions the caller's identity holds there (its job host not counted). */
  sessions: number;
  /** Top-level jobs in those sessions and the identity's job host; `runningJobs` of them unfinished. */
  jobs: number;
  runningJobs: number;
  /** The asking session was the first the agent opened: it was started for this client (on demand). */
  firstClient: boolean;
}

export type SessionMethod = keyof SessionMethods;
export type MethodParams<M extends SessionMethod> = SessionMethods[M]['params'];
export type MethodResult<M extends SessionMethod> = SessionMethods[M]['result'];

/** Event name → data. */
export interface SessionEvents {
  /**
   * Records of one subscription: consecutive records of one job as record entries (`@rjob/core/codec`'s
   * record-entries codec: the bytes the agent's spool holds them as), in order. Never empty. The
   * only form records reach a subscription in.
   */
  'job.packed': { subscriptionId: string; entries: Uint8Array };
  /** The subscribed jobs finished and every record was sent. */
  'job.end': { subscriptionId: string; jobs: JobInfo[] };
  /** A job in the session changed state (sent to every attached client). */
  'job.state': { job: JobInfo };
}

export type SessionEvent = keyof SessionEvents;
