/**
 * One session on the agent: its identity, resume-secret digest, working context (name, cwd, env),
 * its own JobManager, its ReliableChannel and its subscriptions. Links come and go (the server
 * attaches them through the handshake); the session, its jobs and its subscriptions stay until
 * `session.close`, idle expiry, or the client's orderly `close`.
 *
 * A channel that fails (a protocol violation, a resume from a point it cannot replay) costs only
 * that link: the session swaps in a fresh channel and waits, Disconnected, for a new client to
 * take it over (resume with `takeover`). Subscriptions of the broken channel are cancelled; what
 * they had not had acknowledged is still in the spools (with `persist`).
 */
import {
  isTerminal,
  type Job,
  type JobInfo,
  JobManager,
  type JobType,
  ProtocolErrorCode,
  RjobError,
  type SessionInfo,
  type SessionState,
  SessionErrorCode,
  serializeError,
} from '@rjob/core';
import type { ReliableChannel, RequestMessage, SequencedMessage, SessionEvents } from '@rjob/core/protocol';
import type { StoredJob } from '../store/job-store.js';
import type { AgentControl } from './agent-control.js';
import { JobQueue } from './job-queue.js';
import { workOf } from './job-work.js';
import { ANSWERED_LATER, type MethodCall, METHODS, type SessionScope } from './methods/index.js';
import type { RecordSource } from './record-source.js';
import { SpooledRecords } from './spooled-records.js';
import { afterAck, answer, coded, sendEvent } from './reply.js';
import { restoreJobs } from './restore-jobs.js';
import { resumeSecretMatches } from './secret.js';
import { SubscriptionTable } from './subscription-pump.js';
import { selectJobs, toJobInfo } from './wire.js';

export interface AgentSessionInit {
  id: string;
  identity: string;
  secretDigest: Buffer;
  computerName: string;
  /** Makes the session's channel, and a fresh one whenever the current one breaks. */
  newChannel(): ReliableChannel;
  /** Where the session reads its jobs' records (memory or spools). */
  records(manager: JobManager, sessionId: string): RecordSource;
  /** Types for the session's JobManager; built by the server with this session's context. */
  jobTypes: (context: { cwd: string; env: Record<string, string> }) => JobType[];
  cwd: string;
  idleTimeoutMs: number;
  /** Undelivered bytes one job may hold before its producer is paused. */
  maxBufferedBytes?: number;
  /** Called when the session's persistent facts changed (opened, configured, attached, left). */
  saved?(session: AgentSession): void;
  /** A session brought back after an agent restart: its creation and last-seen times, its name. */
  restored?: { createdAtMs: number; lastSeenAtMs: number; name?: string; env: Record<string, string> };
  /** Called once when the session has ended, whatever the cause. */
  onEnded(session: AgentSession): void;
  /**
   * `host`: the identity's job host (the user's local jobs): never expires by idle time, is never
   * resumed by a client, only reached through `view` sessions. `view`: a client's session on a
   * host (`open` with `host: true`): its jobs and records are the host's, its channel and
   * subscriptions its own; it ends when its link does, leaving the host's jobs as they are.
   * Default `session`: a session with its own job table.
   */
  kind?: 'session' | 'host' | 'view';
  /** With kind `view`: the host whose jobs it works on. */
  host?: AgentSession;
  /** The agent's queue of waiting jobs and its job groups (default: one of the session's own). */
  queue?: JobQueue;
}

export class AgentSession {
  readonly id: string;
  readonly identity: string;
  readonly computerName: string;
  readonly createdAtMs: number;
  readonly jobs: JobManager;
  readonly kind: 'session' | 'host' | 'view';
  name: string;
  cwd: string;
  /** Merged under each process job's own env. */
  readonly env: Record<string, string> = {};
  idleTimeoutMs: number;
  lastSeenAtMs = Date.now();
  #state: SessionState = 'Opened';
  #secretDigest: Buffer;
  readonly #newChannel: () => ReliableChannel;
  #channel: ReliableChannel;
  readonly #records: RecordSource;
  readonly #queue: JobQueue;
  readonly #subscriptions = new SubscriptionTable();
  readonly #onEnded: (session: AgentSession) => void;
  readonly #saved: (session: AgentSession) => void;
  #idleTimer: ReturnType<typeof setTimeout> | undefined;
  #invokesRunning = 0;
  #ending: Promise<void> | undefined;
  /** What the method handlers see of this session (methods/context.ts). */
  readonly #scope: SessionScope;

  constructor(init: AgentSessionInit) {
    this.id = init.id;
    this.identity = init.identity;
    this.computerName = init.computerName;
    this.#newChannel = init.newChannel;
    this.createdAtMs = init.restored?.createdAtMs ?? Date.now();
    this.name = init.restored?.name ?? `Session-${init.id.slice(0, 8)}`;
    if (init.restored) {
      Object.assign(this.env, init.restored.env);
      this.lastSeenAtMs = init.restored.lastSeenAtMs;
      // Nobody is attached to a restored session; it waits for a client (a new one: the channel
      // state of the old link died with the old agent).
      this.#state = 'Disconnected';
    }
    this.cwd = init.cwd;
    this.idleTimeoutMs = init.idleTimeoutMs;
    this.#secretDigest = init.secretDigest;
    this.#onEnded = init.onEnded;
    this.#saved = init.saved ?? (() => {});
    this.kind = init.kind ?? 'session';
    this.#queue = init.queue ?? (init.host ? init.host.#queue : new JobQueue());
    if (this.kind === 'view') {
      if (!init.host) throw new TypeError('A view session needs its host.');
      this.jobs = init.host.jobs;
      this.#records = init.host.#records;
    } else {
      this.jobs = new JobManager({
        types: init.jobTypes(this),
        ...(init.maxBufferedBytes === undefined ? {} : { maxBufferedBytes: init.maxBufferedBytes }),
      });
      this.#records = init.records(this.jobs, this.id);
    }
    this.#channel = this.#bind(init.newChannel());
    this.#scope = this.#newScope();
  }

  /**
   * Puts the jobs of a restored session back (see restore-jobs.ts). Their records are read from
   * their spools.
   */
  async restoreJobs(stored: StoredJob[]): Promise<void> {
    const records = this.#records;
    if (!(records instanceof SpooledRecords)) return;
    await restoreJobs(
      { jobs: this.jobs, queue: this.#queue, records, watch: (job) => this.#watchState(job) },
      stored,
    );
    // Expiry counts from when a client was last seen, before the restart.
    const idleLeftMs = Math.max(0, this.lastSeenAtMs + this.idleTimeoutMs - Date.now());
    this.#armIdleTimer(idleLeftMs);
  }

  /** The session's current channel: what a resume attaches the new link to. */
  get channel(): ReliableChannel {
    return this.#channel;
  }

  #bind(channel: ReliableChannel): ReliableChannel {
    // Non-blocking on purpose: job.wait or invoke can take hours, and the requests behind them
    // (job.get, job.stop) must not queue up behind it.
    channel.onMessage((message) => {
      if (this.#channel === channel) this.#onMessage(message, channel);
    });
    channel.onDisconnect(() => {
      if (this.#channel === channel) this.#disconnected();
    });
    // A new client took the session over (resume with `takeover`): the handshake made a successor
    // channel; it is the session's from now on. The old client's subscriptions go with its channel
    // (what it never acknowledged stays in the spools for the new client to subscribe to).
    channel.onTakeover((event) => {
      if (this.#channel !== channel) return;
      this.#cancelSubscriptions();
      this.#channel = this.#bind(event.channel);
    });
    channel.onClose((reason) => {
      if (this.#channel !== channel || this.#ending) return;
      if (RjobError.hasCode(reason, ProtocolErrorCode.ChannelClosed) && reason.details?.byPeer === true) {
        // The client's orderly `close`: the session ends, as the protocol says.
        void this.end('Session closed by the client.');
      } else {
        this.#renewChannel();
      }
    });
    return channel;
  }

  /**
   * Replaces the channel with a fresh one (counters at 0) and closes the old one. Used when the
   * old one broke, and when a new client (which cannot know the old counters) takes over.
   */
  #renewChannel(reason = 'The session channel failed.'): void {
    const old = this.#channel;
    this.#cancelSubscriptions();
    this.#channel = this.#bind(this.#newChannel());
    old.close(reason);
    if (this.#state !== 'Closed') this.#disconnected();
  }

  #cancelSubscriptions(): void {
    this.#subscriptions.cancelAll();
  }

  get state(): SessionState {
    return this.#state;
  }

  /** True when `identity` owns the session and `secret` is its resume secret (constant time). */
  canResume(identity: string, secret: string): boolean {
    // Always hash the candidate, so a wrong identity costs the same time as a wrong secret.
    const secretOk = resumeSecretMatches(this.#secretDigest, secret);
    // A host is reached only through views; a view ends with its link, so neither resumes.
    return secretOk && identity === this.identity && this.#state !== 'Closed' && this.kind === 'session';
  }

  /** The digest of the session's resume secret, as stored. */
  get secretDigest(): Buffer {
    return this.#secretDigest;
  }

  /** `session.claim`: a new resume secret (its digest) replaces the old one, which stops working. */
  newSecret(digest: Buffer): void {
    this.#secretDigest = digest;
    this.#saved(this);
  }

  /** Saves the session's persistent facts now (a new host, which no client attaches to). */
  persist(): void {
    this.#saved(this);
  }

  /** A link was attached by the handshake (open or resume). */
  attached(): void {
    if (this.#state === 'Closed') return;
    this.#state = 'Opened';
    this.lastSeenAtMs = Date.now();
    this.#clearIdleTimer();
    this.#saved(this);
  }

  /** A job as it crosses the wire, with hasMoreData from where its records really are. */
  readonly #info = (job: Job): JobInfo => {
    const info = toJobInfo(job, this.#records.hasMoreData(job));
    const work = workOf(job);
    if (work?.label !== undefined) info.label = work.label;
    if (work?.after !== undefined) info.after = work.after;
    if (work?.group !== undefined) info.group = work.group;
    return info;
  };

  info(): SessionInfo {
    const runningJobs = this.jobs.get().filter((job) => !job.finished).length;
    return {
      sessionId: this.id,
      name: this.name,
      computerName: this.computerName,
      state: this.#state,
      availability: this.#state !== 'Opened' ? 'None' : this.#invokesRunning > 0 ? 'Busy' : 'Available',
      cwd: this.cwd,
      createdAtMs: this.createdAtMs,
      lastSeenAtMs: this.lastSeenAtMs,
      runningJobs,
    };
  }

  /**
   * Ends the session: cancels its subscriptions, stops its jobs, closes its channel (telling the
   * client, when a link is attached). Idempotent.
   */
  end(reason = 'Session closed.', options: { keepStored?: boolean } = {}): Promise<void> {
    this.#ending ??= this.#end(reason, options.keepStored ?? false);
    return this.#ending;
  }

  async #end(reason: string, keepStored: boolean): Promise<void> {
    this.#state = 'Closed';
    this.#clearIdleTimer();
    this.#subscriptions.cancelAll();
    this.#onEnded(this);
    try {
      // A view's jobs are its host's: they go on without it.
      if (this.kind !== 'view') {
        await this.jobs.close();
        await this.#records.dispose(keepStored);
      }
    } finally {
      this.#channel.close(reason);
    }
  }

  // ---- links ---------------------------------------------------------------------------------

  #disconnected(): void {
    if (this.#state === 'Closed') return;
    if (this.kind === 'view') {
      // Nothing of a view outlives its link: what its subscriptions had in flight and no one
      // acknowledged goes back to the host's spools at once, for the next receiver.
      void this.end('The link of a host session closed.');
      return;
    }
    this.#state = 'Disconnected';
    this.lastSeenAtMs = Date.now();
    this.#armIdleTimer();
    this.#saved(this);
  }

  #armIdleTimer(delayMs = this.idleTimeoutMs): void {
    this.#clearIdleTimer();
    // The user's local jobs never expire by idle time (an agent restart keeps them as well).
    if (this.kind === 'host') return;
    this.#idleTimer = setTimeout(() => {
      if (this.#state === 'Disconnected') void this.end('Session expired after being idle.');
    }, delayMs);
    // An expiry alone must not keep the agent process alive.
    this.#idleTimer.unref?.();
  }

  #clearIdleTimer(): void {
    if (this.#idleTimer) clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
  }

  // ---- requests ------------------------------------------------------------------------------

  #onMessage(message: SequencedMessage, channel: ReliableChannel): void {
    // Responses and events from a client have no meaning here; they are consumed and ignored.
    if (message.type !== 'request') return;
    this.lastSeenAtMs = Date.now();
    void this.#handle(message, channel);
  }

  async #handle(request: RequestMessage, channel: ReliableChannel): Promise<void> {
    let result: unknown;
    try {
      result = await this.#call(request, channel);
    } catch (error) {
      answer(channel, request.id, { error: serializeError(coded(error)) });
      return;
    }
    // The answer goes to the channel that asked: after a takeover, the new client never asked.
    if (result !== ANSWERED_LATER) answer(channel, request.id, { result });
  }

  /** Sends an event on the current channel; returns false when the caller should wait for drain. */
  #event<E extends keyof SessionEvents>(name: E, data: SessionEvents[E]): boolean {
    return sendEvent(this.#channel, name, data);
  }

  /**
   * Dispatch: the method's handler from the table (methods/), given this session's scope. An
   * unknown method is answered ERR_UNKNOWN_METHOD.
   */
  #call(request: RequestMessage, channel: ReliableChannel): Promise<unknown> | unknown {
    if (this.#state === 'Closed') {
      throw new RjobError(SessionErrorCode.SessionClosed, 'The session is closed.');
    }
    const { method, params } = request;
    const handler = METHODS.get(method);
    if (!handler) {
      if (method.startsWith('hosted.')) return this.hosted(method, params);
      throw new RjobError(ProtocolErrorCode.UnknownMethod, `Unknown method "${method.slice(0, 256)}".`, {
        details: { method: method.slice(0, 256) },
      });
    }
    return handler(this.#scope, { method, params, requestId: request.id, channel });
  }

  /** Replaced by the server: what `agent.info` / `agent.stop` know of the agent process. */
  control: AgentControl = {
    info: () => {
      throw new RjobError(ProtocolErrorCode.UnknownMethod, 'Unknown method "agent.info".');
    },
  };

  /** Replaced by the server when it holds sessions for its clients: the `hosted.*` methods. */
  hosted(method: string, _params: unknown): Promise<unknown> {
    return Promise.reject(
      new RjobError(ProtocolErrorCode.UnknownMethod, `Unknown method "${method.slice(0, 256)}".`, {
        details: { method: method.slice(0, 256) },
      }),
    );
  }

  /** Replaced by the server so `session.list` can see the identity's other sessions. */
  listSessions(): SessionInfo[] {
    return [this.info()];
  }

  /** Replaced by the server: `session.claim` of another session of this identity. */
  claimSession(_sessionId: string): { sessionId: string; resumeSecret: string; info: SessionInfo } {
    throw new RjobError(ProtocolErrorCode.SessionNotFound, 'No such session.');
  }

  #newScope(): SessionScope {
    // Getters where the session's own field may change (cwd, control) or is set after this.
    const session = this;
    return {
      id: this.id,
      identity: this.identity,
      jobs: this.jobs,
      queue: this.#queue,
      records: this.#records,
      subscriptions: this.#subscriptions,
      get cwd() {
        return session.cwd;
      },
      get control() {
        return session.control;
      },
      info: this.#info,
      sessionInfo: () => this.info(),
      listSessions: () => this.listSessions(),
      claimSession: (sessionId) => this.claimSession(sessionId),
      select: (selector) => selectJobs(this.jobs, selector),
      watchState: (job) => this.#watchState(job),
      configure: (changes) => {
        if (changes.name !== undefined) this.name = changes.name;
        if (changes.cwd !== undefined) this.cwd = changes.cwd;
        if (changes.env) Object.assign(this.env, changes.env);
        if (changes.idleTimeoutMs !== undefined) this.idleTimeoutMs = changes.idleTimeoutMs;
        this.#saved(this);
      },
      disconnect: (call) => this.#disconnectRequested(call),
      close: (call) => this.#closeRequested(call),
      end: (reason) => this.end(reason),
      busy: async (work) => {
        this.#invokesRunning++;
        try {
          return await work();
        } finally {
          this.#invokesRunning--;
        }
      },
    };
  }

  #disconnectRequested({ requestId, channel }: MethodCall): typeof ANSWERED_LATER {
    this.#state = 'Disconnected';
    const seq = answer(channel, requestId, { result: this.info() });
    void afterAck(channel, seq).then(() => {
      if (this.#state === 'Disconnected' && this.#channel === channel) {
        channel.detach('Client disconnected the session.');
      }
    });
    return ANSWERED_LATER;
  }

  #closeRequested({ requestId, channel }: MethodCall): Promise<typeof ANSWERED_LATER> {
    // Refuse resumes and new work at once; the answer goes out once the jobs are gone.
    this.#state = 'Closed';
    return (async (): Promise<typeof ANSWERED_LATER> => {
      this.#clearIdleTimer();
      this.#subscriptions.cancelAll();
      if (this.kind !== 'view') await this.jobs.close().catch(() => {});
      const seq = answer(channel, requestId, { result: undefined });
      await afterAck(channel, seq);
      await this.end('Session closed by the client.');
      return ANSWERED_LATER;
    })();
  }

  #watchState(job: Job): void {
    const watch = (target: Job): void => {
      const off = target.onStateChange(({ state }) => {
        this.#event('job.state', { job: this.#info(target) });
        if (isTerminal(state)) off();
      });
      for (const child of target.children) watch(child);
    };
    watch(job);
  }
}
