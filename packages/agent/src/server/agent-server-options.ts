/** What an {@link AgentServer} is made with, and what its `attach` and `restore` report. */
import type { JobType, ReliableChannelOptions } from '@rjob/core';
import type { ProcessJobTypeOptions } from '@rjob/job-process';
import type { ThreadJobOptions } from '@rjob/job-thread';
import type { RecordSpoolOptions } from '../spool/record-spool.js';
import type { AgentServer } from './agent-server.js';
import type { PluginError } from './plugin-info.js';
import type { AgentTransport } from './remote-jobs.js';

export interface AgentServerOptions {
  /** Directory for the agent's state (spools, job store, daemon log). Created by the caller. */
  stateDir: string;
  /** The computer name reported in session info. Default `os.hostname()`. */
  computerName?: string;
  /**
   * Maps the `hello` token to an identity; throw to refuse the link (ERR_UNAUTHORIZED). Sessions
   * belong to the identity that opened them. Default: every link is the agent's own user (the
   * doors' permissions, such as the 0600 socket, are the authentication).
   */
  authenticate?(token: string | undefined): string | Promise<string>;
  /** Time allowed for each link's handshake, in ms. Default 10 000. */
  handshakeTimeoutMs?: number;
  /** Options of every session's ReliableChannel: heartbeats, windows, high-water mark. Defaults as core's. */
  channel?: ReliableChannelOptions;
  /** Disconnected sessions are closed (their jobs stopped) after this long, in ms. Default 2 h. */
  idleTimeoutMs?: number;
  /** Working directory of new sessions. Default `os.homedir()`. */
  defaultCwd?: string;
  /**
   * Undelivered bytes one job may hold in memory before its producer is paused. Default with
   * `persist`: 4 MiB (the spool is the real buffer; memory only stages records on their way to
   * it); without: core's 64 MiB.
   */
  maxBufferedBytes?: number;
  /** Options of the shared ThreadJob pool. */
  thread?: ThreadJobOptions;
  /** Options of the shared BackgroundJob type. */
  process?: ProcessJobTypeOptions;
  /** Free text naming this software in `welcome`. Default `rjob-agent`. */
  software?: string;
  /**
   * Keep sessions and jobs in the store under `stateDir`, and move every job's records to a disk
   * spool (bounded, block or drop policy) instead of holding them in memory. Default true. Such an
   * agent holds the state directory's lock (`agent.lock`) until {@link AgentServer.close}: a second
   * one on the same directory is refused with ERR_AGENT_RUNNING (see {@link AgentServer.ready}).
   */
  persist?: boolean;
  /** Options of every job's spool when `persist`: `maxBytes` (default 256 MiB), `policy` (default block), .... */
  spool?: Omit<RecordSpoolOptions, 'dir'>;
  /**
   * Bytes of partly received frames that all the links of this agent may hold together (see
   * {@link AgentServer.frameBudget}). Default 64 MiB (core's DEFAULT_FRAME_BUDGET_BYTES).
   */
  frameBudgetBytes?: number;
  /**
   * Job types of plugins, offered to every session besides thread and process (by name and
   * aliases, as `job.start`'s `type`). The agent disposes them when it closes.
   */
  jobTypes?: readonly JobType[];
  /**
   * Transport plugins: with any, sessions also take `RemoteJob` jobs (alias `remote`) whose
   * definition names a target as text and the work to run there (see RemoteTargetDefinition); the
   * first transport that accepts the target reaches it. What `rjob invoke --as-job` uses.
   */
  transports?: readonly AgentTransport[];
  /**
   * Plugins that were named but could not be loaded (the `rjob` CLI's config file): reported by
   * `agent.info`, so a client can say why a job type or transport it expected is missing.
   */
  pluginErrors?: readonly PluginError[];
  /**
   * Called when a client asks the agent to stop (`agent.stop`, after its answer arrived); the
   * daemon then shuts down as on SIGTERM. Without it, `agent.stop` is refused
   * (ERR_AGENT_STOP_UNSUPPORTED): an agent embedded in a program is stopped by that program.
   */
  onStopRequested?: () => void;
}

export interface RestoreReport {
  sessions: number;
  jobs: number;
  /** Jobs that were running when the previous agent died, now Failed ("agent restarted"). */
  failedOnRestart: number;
  /** Store files that could not be read (left in place). */
  skipped: number;
}

export interface AttachOptions {
  /**
   * The identity of the link, given by a door that authenticates its peers itself (a Unix socket
   * only its owner can reach): the server's `authenticate` is then not asked.
   */
  identity?: string;
}

export interface AttachResult {
  sessionId: string;
  identity: string;
  resumed: boolean;
}
