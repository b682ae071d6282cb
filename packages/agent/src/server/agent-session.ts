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
import { stat, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { isAbsolute, resolve } from 'node:path';
import { inspect } from 'node:util';
import {
  ErrorCode,
  isTerminal,
  type Job,
  type JobInfo,
  JobManager,
  type JobType,
  type Payload,
  ProtocolErrorCode,
  type ReceiveToFileResult,
  type ReliableChannel,
  type RequestMessage,
  RjobError,
  type SequencedMessage,
  type SessionEvents,
  type SessionInfo,
  type SessionState,
  SessionErrorCode,
  serializeError,
  toRjobError,
  type WireSelector,
} from '@rjob/core';
import { AgentErrorCode } from '../error-codes.js';
import type { StoredJob } from '../store/job-store.js';
import { type AgentControl, agentInfo, agentStop } from './agent-control.js';
import { groupCall, JobQueue } from './job-queue.js';
import { type JobWork, rememberWork, storedWork, workOf } from './job-work.js';
import { queuedStart, sendInput } from './queued-start.js';
import { type RecordSource, SpooledRecords } from './record-source.js';
import { restoredJobType } from './restored-job-type.js';
import { resumeSecretMatches } from './secret.js';
import {
  getFilter,
  groupRequest,
  invalidParams,
  isPlainObject,
  objectParams,
  optionalBoolean,
  optionalNonNegative,
  optionalString,
  requiredString,
  toJobInfo,
  wireSelector,
  workRequest,
} from './wire.js';

/** How long `session.close` / `session.disconnect` wait for the client to acknowledge the answer. */
const ANSWER_ACK_WAIT_MS = 5_000;

/** Marker result for methods that answered on their own (so #handle must not answer again). */
const ANSWERED_LATER: unique symbol = Symbol('answered later');

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

interface Subscription {
  readonly id: string;
  /**
   * The client asked for `job.records` events (many records each). Without it every record is
   * its own `job.record` event, as protocol v1 clients that predate batches expect.
   */
  readonly batch: boolean;
  /**
   * The client also takes `job.packed` events: a spooled job's records as the entries they are
   * stored as (docs/protocol.md §3.7). Only with `batch`.
   */
  readonly packed: boolean;
  /**
   * The client acknowledges records itself (`job.ack`) as its receiver takes them; the channel's
   * own acks (the bytes arrived) consume nothing. A consuming subscription without it is
   * committed on the channel's acks (invoke's temporary job).
   */
  readonly clientAck: boolean;
  /** Per leaf job id: the leaf, the last record sent and the last the client acknowledged. */
  readonly sent: Map<number, { leaf: Job; sentSeq: number; ackedSeq: number }>;
  /** Aborted when the subscription is cancelled; ends its record stream. */
  readonly signal: AbortSignal;
  cancel(): void;
  /** Called after each client ack (the pump waits on it once everything was sent). */
  onAck?: () => void;
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
  readonly #secretDigest: Buffer;
  readonly #newChannel: () => ReliableChannel;
  #channel: ReliableChannel;
  readonly #records: RecordSource;
  readonly #queue: JobQueue;
  readonly #subscriptions = new Map<string, Subscription>();
  readonly #onEnded: (session: AgentSession) => void;
  readonly #saved: (session: AgentSession) => void;
  #idleTimer: ReturnType<typeof setTimeout> | undefined;
  #invokesRunning = 0;
  #ending: Promise<void> | undefined;

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
  }

  /**
   * Puts the jobs of a restored session back, in id order and under their ids (a placeholder
   * takes each id that belonged to a removed job). Their records are read from their spools.
   */
  async restoreJobs(stored: StoredJob[]): Promise<void> {
    const records = this.#records;
    if (!(records instanceof SpooledRecords)) return;
    const byId = new Map(stored.map((entry) => [entry.id, entry]));
    // Ids are handed out in order from 1 in this fresh manager; a group needs to know the next one.
    let nextId = 1;
    for (const entry of [...stored].sort((a, b) => a.id - b.id)) {
      if (entry.parentId !== undefined) continue;
      const children = entry.childIds.map((id) => byId.get(id));
      if (children.length > 0 && children.every((child) => child !== undefined)) {
        nextId = await this.#restoreGroup(entry, children as StoredJob[], nextId, records);
        continue;
      }
      const work = storedWork(entry.data);
      if (work?.waiting) {
        // It never ran: back in the queue, under its id and instance id.
        nextId = await this.#skipTo(entry, nextId);
        await queuedStart({
          jobs: this.jobs,
          queue: this.#queue,
          records,
          work,
          name: entry.name,
          stored: entry,
          watch: (job) => this.#watchState(job),
        });
        nextId = entry.id + 1;
        continue;
      }
      for (;;) {
        const job = await this.jobs.start(restoredJobType(entry), entry, {
          name: entry.name,
          command: entry.command,
          location: entry.location,
        });
        nextId = job.id + 1;
        if (job.id >= entry.id) {
          const work = storedWork(entry.data);
          if (work) rememberWork(job, work);
          await records.adopt(job, entry);
          break;
        }
        await this.jobs.remove(job, { force: true });
      }
    }
    this.#queue.pump();
    // Expiry counts from when a client was last seen, before the restart.
    const idleLeftMs = Math.max(0, this.lastSeenAtMs + this.idleTimeoutMs - Date.now());
    this.#armIdleTimer(idleLeftMs);
  }

  /**
   * Puts a restored parent back with its children (job.startGroup's jobs): placeholders take the
   * ids below the parent's, then startGroup gives the parent its id and the children the next ones,
   * as it did when the group was started. Each child reports its stored outcome, so the parent's
   * state is derived again from theirs. Returns the next free id.
   */
  async #restoreGroup(
    entry: StoredJob,
    stored: StoredJob[],
    nextId: number,
    records: SpooledRecords,
  ): Promise<number> {
    await this.#skipTo(entry, nextId);
    const parent = this.jobs.startGroup({
      name: entry.name,
      type: entry.type,
      command: entry.command,
      location: entry.location,
      children: stored.map((child) => ({
        type: restoredJobType(child),
        definition: child,
        name: child.name,
        location: child.location,
      })),
    });
    await records.adopt(
      parent,
      entry,
      parent.children.map((job, i) => ({ job, stored: stored[i]! })),
    );
    return Math.max(parent.id, ...parent.children.map((child) => child.id)) + 1;
  }

  /** Placeholders take the ids below `entry`'s (those of removed jobs). Returns the next free id. */
  async #skipTo(entry: StoredJob, nextId: number): Promise<number> {
    let next = nextId;
    while (next < entry.id) {
      const placeholder = await this.jobs.start(restoredJobType(entry), entry);
      next = placeholder.id + 1;
      await this.jobs.remove(placeholder, { force: true });
    }
    return next;
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
    for (const subscription of this.#subscriptions.values()) subscription.cancel();
    this.#subscriptions.clear();
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
    for (const subscription of this.#subscriptions.values()) subscription.cancel();
    this.#subscriptions.clear();
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
  #event<E extends keyof SessionEvents>(name: E, data: SessionEvents[E], channel = this.#channel): boolean {
    if (channel.state === 'closed') return false;
    return channel.send({ type: 'event', name, data });
  }

  #call(request: RequestMessage, channel: ReliableChannel): Promise<unknown> | unknown {
    if (this.#state === 'Closed') {
      throw new RjobError(SessionErrorCode.SessionClosed, 'The session is closed.');
    }
    const { method, params } = request;
    switch (method) {
      case 'session.info':
        return this.info();
      case 'session.configure':
        return this.#configure(params);
      case 'session.list':
        // Answered by the server, which sees every session; see AgentServer.
        return this.listSessions();
      case 'session.disconnect':
        return this.#disconnectRequested(request.id, channel);
      case 'session.close':
        return this.#closeRequested(request.id, channel);
      case 'job.start':
        return this.#start(params);
      case 'job.startGroup':
        return this.#startGroup(params);
      case 'job.get':
        return this.jobs.get(getFilter(params)).map(this.#info);
      case 'job.receive':
        return this.#receive(params, request.id, channel);
      case 'job.receiveToFile':
        return this.#receiveToFile(params);
      case 'job.wait': {
        const p = objectParams(params, method);
        const any = optionalBoolean(p, 'any');
        const timeoutMs = optionalNonNegative(p, 'timeoutMs');
        return this.jobs
          .wait(this.#select(wireSelector(p.selector)), {
            ...(any === undefined ? {} : { any }),
            ...(timeoutMs === undefined ? {} : { timeoutMs }),
          })
          .then(async (jobs) => {
            // Finished includes persisted: a job Wait-Job returned survives an agent crash as is.
            await this.#records.settled(jobs);
            return jobs.map(this.#info);
          });
      }
      case 'job.stop': {
        const p = objectParams(params, method);
        return this.jobs.stop(this.#select(wireSelector(p.selector))).then((jobs) => jobs.map(this.#info));
      }
      case 'job.remove': {
        const p = objectParams(params, method);
        const force = optionalBoolean(p, 'force');
        return this.jobs
          .remove(this.#select(wireSelector(p.selector)), force === undefined ? {} : { force })
          .then(async (jobs) => {
            const infos = jobs.map(this.#info);
            await this.#records.forget(jobs);
            return infos.map((info) => ({ ...info, hasMoreData: false }));
          });
      }
      case 'job.restart':
        return this.#restart(params);
      case 'job.suspend': {
        const p = objectParams(params, method);
        return this.jobs.suspend(this.#select(wireSelector(p.selector))).map(this.#info);
      }
      case 'job.resume': {
        const p = objectParams(params, method);
        return this.jobs.continueJobs(this.#select(wireSelector(p.selector))).map(this.#info);
      }
      case 'job.send':
        return sendInput(this.jobs, params, (selector) => this.#select(selector)).then(this.#info);
      case 'group.list':
      case 'group.add':
      case 'group.set':
      case 'group.remove':
        return groupCall(this.#queue, method, params);
      case 'job.subscribe':
        return this.#subscribe(params, channel);
      case 'job.ack':
        return this.#ack(params);
      case 'job.unsubscribe': {
        const p = objectParams(params, method);
        const subscriptionId = requiredString(p, 'subscriptionId');
        this.#subscriptions.get(subscriptionId)?.cancel();
        this.#subscriptions.delete(subscriptionId);
        return undefined;
      }
      case 'invoke':
        return this.#invoke(params, channel);
      case 'agent.info':
        return agentInfo(this.control, this.identity, this.id, params);
      case 'agent.stop': {
        const { result, afterAnswer } = agentStop(this.control, this.identity, this.id, params);
        const seq = answer(channel, request.id, { result });
        // The asking session is done: not kept for the next agent, as the others are.
        void afterAck(channel, seq)
          .then(() => this.end('The agent is stopping.').catch(noop))
          .then(afterAnswer);
        return ANSWERED_LATER;
      }
      default:
        if (method.startsWith('hosted.')) return this.hosted(method, params);
        throw new RjobError(ProtocolErrorCode.UnknownMethod, `Unknown method "${method.slice(0, 256)}".`, {
          details: { method: method.slice(0, 256) },
        });
    }
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

  async #configure(params: unknown): Promise<SessionInfo> {
    const p = objectParams(params, 'session.configure');
    const name = optionalString(p, 'name', 256);
    const cwdParam = optionalString(p, 'cwd');
    const idleTimeoutMs = optionalNonNegative(p, 'idleTimeoutMs');
    let env: Record<string, string> | undefined;
    if (p.env !== undefined) {
      if (!isPlainObject(p.env) || !Object.values(p.env).every((value) => typeof value === 'string')) {
        throw invalidParams('env must map names to strings.');
      }
      env = p.env as Record<string, string>;
    }
    let cwd: string | undefined;
    if (cwdParam !== undefined) {
      cwd = isAbsolute(cwdParam) ? cwdParam : resolve(this.cwd, cwdParam);
      const info = await stat(cwd).catch(() => undefined);
      if (!info?.isDirectory()) throw invalidParams(`${cwd} is not a directory.`, { cwd });
    }
    // Check everything before changing anything, so a bad field leaves the session as it was.
    if (name !== undefined) this.name = name;
    if (cwd !== undefined) this.cwd = cwd;
    if (env) Object.assign(this.env, env);
    if (idleTimeoutMs !== undefined) this.idleTimeoutMs = idleTimeoutMs;
    this.#saved(this);
    return this.info();
  }

  #disconnectRequested(requestId: number, channel: ReliableChannel): typeof ANSWERED_LATER {
    this.#state = 'Disconnected';
    const seq = answer(channel, requestId, { result: this.info() });
    void afterAck(channel, seq).then(() => {
      if (this.#state === 'Disconnected' && this.#channel === channel) {
        channel.detach('Client disconnected the session.');
      }
    });
    return ANSWERED_LATER;
  }

  #closeRequested(requestId: number, channel: ReliableChannel): Promise<typeof ANSWERED_LATER> {
    // Refuse resumes and new work at once; the answer goes out once the jobs are gone.
    this.#state = 'Closed';
    return (async (): Promise<typeof ANSWERED_LATER> => {
      this.#clearIdleTimer();
      for (const subscription of this.#subscriptions.values()) subscription.cancel();
      this.#subscriptions.clear();
      if (this.kind !== 'view') await this.jobs.close().catch(() => {});
      const seq = answer(channel, requestId, { result: undefined });
      await afterAck(channel, seq);
      await this.end('Session closed by the client.');
      return ANSWERED_LATER;
    })();
  }

  // ---- jobs ----------------------------------------------------------------------------------

  async #start(params: unknown): Promise<JobInfo> {
    const request = workRequest(params, 'job.start');
    const keys = startedByKey(this.jobs);
    const known = request.requestKey === undefined ? undefined : keys.get(request.requestKey);
    if (known) return this.#info(await known);
    const starting = this.#startWork(params, 'job.start');
    if (request.requestKey !== undefined) {
      keys.set(request.requestKey, starting);
      starting.catch(() => keys.delete(request.requestKey!));
      // Bounded: a key matters only for the moments a client may repeat its request.
      if (keys.size > START_KEYS_KEPT) keys.delete(keys.keys().next().value!);
    }
    return this.#info(await starting);
  }

  /**
   * A parent with one child per request (JobManager.startGroup). Children's types resolve as
   * job.start's do (`process` by default); each child gets its own spool, so receiving the parent
   * reads its children's records. After an agent restart the group comes back whole (see
   * #restoreGroup).
   */
  async #startGroup(params: unknown): Promise<JobInfo> {
    const request = groupRequest(params);
    const parent = this.jobs.startGroup({
      ...(request.name === undefined ? {} : { name: request.name }),
      ...(request.type === undefined ? {} : { type: request.type }),
      ...(request.command === undefined ? {} : { command: request.command }),
      ...(request.location === undefined ? {} : { location: request.location }),
      ...(request.throttleLimit === undefined ? {} : { throttleLimit: request.throttleLimit }),
      children: request.children.map((child) => ({
        type: child.type ?? 'process',
        definition: child.definition,
        ...(child.name === undefined ? {} : { name: child.name }),
        ...(child.location === undefined ? {} : { location: child.location }),
        ...(child.typeName === undefined ? {} : { typeName: child.typeName }),
        ...(child.command === undefined ? {} : { command: child.command }),
      })),
    });
    try {
      await this.#records.track(parent, { type: 'group', definition: request });
    } catch (error) {
      // As for job.start: a group whose records have nowhere to go must not run unseen.
      await this.jobs.remove(parent, { force: true }).catch(() => {});
      throw error;
    }
    this.#watchState(parent);
    return this.#info(parent);
  }

  async #startWork(params: unknown, method: string): Promise<Job> {
    const request = workRequest(params, method);
    const work: JobWork = { type: request.type ?? 'process', definition: request.definition };
    if (request.label !== undefined) work.label = request.label;
    if (request.after !== undefined || request.group !== undefined) {
      // Checked before anything starts: an unknown job or group refuses the start.
      if (request.after !== undefined) work.after = this.#select(request.after).map((job) => job.id);
      if (request.group !== undefined) {
        this.#queue.checkGroup(request.group);
        work.group = request.group;
      }
      return queuedStart({
        jobs: this.jobs,
        queue: this.#queue,
        records: this.#records,
        work,
        ...(request.name === undefined ? {} : { name: request.name }),
        watch: (job) => this.#watchState(job),
      });
    }
    const job = await this.jobs.start(
      request.type ?? 'process',
      request.definition,
      request.name === undefined ? {} : { name: request.name },
    );
    rememberWork(job, work);
    try {
      // The job store keeps this as the job's data: a restarted agent has the label and definition.
      await this.#records.track(job, work);
    } catch (error) {
      // A job whose records have nowhere to go must not run unseen.
      await this.jobs.remove(job, { force: true }).catch(() => {});
      throw error;
    }
    this.#watchState(job);
    return job;
  }

  /** `job.restart`: each finished job's work started again as a new job (see rpc.ts). */
  async #restart(params: unknown): Promise<JobInfo[]> {
    const p = objectParams(params, 'job.restart');
    const jobs = this.#select(wireSelector(p.selector));
    // Every job is checked before any starts, so a refusal starts nothing.
    for (const job of jobs) {
      if (!job.finished) {
        throw new RjobError(
          ErrorCode.JobRunning,
          `Job ${job.id} (${job.name}) is ${job.state}; it can be restarted once finished.`,
          {
            details: { id: job.id, state: job.state },
          },
        );
      }
      if (!workOf(job))
        throw invalidParams(`Job ${job.id} (${job.name}) cannot be restarted: its definition is not kept.`, {
          id: job.id,
        });
    }
    const started: JobInfo[] = [];
    for (const job of jobs) {
      const work = workOf(job)!;
      const request = {
        type: work.type,
        definition: work.definition,
        name: job.name,
        ...(work.label === undefined ? {} : { label: work.label }),
        // Again in its group (its dependencies were met or failed once; they are not waited for).
        ...(work.group === undefined ? {} : { group: work.group }),
      };
      started.push(this.#info(await this.#startWork(request, 'job.restart')));
    }
    return started;
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

  /**
   * Receive-Job in one answer. The records are held, not consumed, until the client acknowledged
   * the answer: an answer that cannot be sent (larger than a frame) or never arrives consumes
   * nothing. Answers are bounded by the frame size; `job.subscribe` with `follow: false` streams
   * the same records in batches, whatever their number.
   */
  async #receive(
    params: unknown,
    requestId: number,
    channel: ReliableChannel,
  ): Promise<typeof ANSWERED_LATER> {
    const p = objectParams(params, 'job.receive');
    const keep = optionalBoolean(p, 'keep') ?? false;
    const jobs = this.#select(wireSelector(p.selector));
    if (keep || !this.#records.holdsAside) {
      // Without a disk spool there is nothing to give back: consumed as read (memory agents only).
      answer(channel, requestId, { result: await this.#records.receive(jobs, keep) });
      return ANSWERED_LATER;
    }
    const held = await this.#records.hold(jobs);
    const { seq, sent } = answerReporting(channel, requestId, { result: held.records });
    if (!sent) {
      held.release();
      return ANSWERED_LATER;
    }
    void channel.whenAcked(seq).then(
      () => held.commit(),
      () => held.release(),
    );
    return ANSWERED_LATER;
  }

  /** `job.ack`: the client's receiver took these records; consume them. */
  #ack(params: unknown): undefined {
    const p = objectParams(params, 'job.ack');
    const subscription = this.#subscriptions.get(requiredString(p, 'subscriptionId'));
    if (!Array.isArray(p.acks) || p.acks.length > 100_000) throw invalidParams('acks must be an array.');
    for (const item of p.acks) {
      if (!isPlainObject(item) || !Number.isSafeInteger(item.jobId) || !Number.isSafeInteger(item.seq)) {
        throw invalidParams('each ack is { jobId, seq } with integers.');
      }
    }
    // An ack for a subscription that already ended (cancelled, session taken over) is moot: what
    // it had not acknowledged went back to the spools, and is delivered again.
    if (!subscription) return undefined;
    for (const { jobId, seq } of p.acks as Array<{ jobId: number; seq: number }>) {
      const entry = subscription.sent.get(jobId);
      // Never past what was sent: a client cannot consume records it has not been given.
      const upTo = entry ? Math.min(seq, entry.sentSeq) : 0;
      if (!entry || upTo <= entry.ackedSeq) continue;
      entry.ackedSeq = upTo;
      this.#records.ackUpTo(entry.leaf, upTo);
    }
    subscription.onAck?.();
    return undefined;
  }

  /**
   * `Receive-Job … > path`: the output stream goes to the file, every other record back to the
   * caller (as PowerShell's `>` redirects only the success stream and the rest reaches the host).
   * The records are held, not consumed, until the file is written: a write that fails (missing
   * directory, no permission, disk full) consumes nothing, so they can still be received.
   */
  async #receiveToFile(params: unknown): Promise<ReceiveToFileResult> {
    const p = objectParams(params, 'job.receiveToFile');
    const keep = optionalBoolean(p, 'keep') ?? false;
    const append = optionalBoolean(p, 'append') ?? false;
    const path = this.#filePath(requiredString(p, 'path', 4096));
    const jobs = this.#select(wireSelector(p.selector));
    const held = keep
      ? { records: await this.#records.receive(jobs, true), commit: async () => {}, release: () => {} }
      : await this.#records.hold(jobs);
    const output = held.records.filter((record) => record.stream === 'output' && !record.reason);
    const other = held.records.filter((record) => record.stream !== 'output' || record.reason);
    const data = Buffer.from(output.map((record) => outputLine(record.data)).join(''), 'utf8');
    try {
      // As a shell's `>` / `>>`: created with the default mode under the agent's umask.
      await writeFile(path, data, { flag: append ? 'a' : 'w' });
    } catch (error) {
      held.release();
      const { code, syscall } = error as NodeJS.ErrnoException;
      throw new RjobError(AgentErrorCode.FileWrite, `Cannot write ${path}: ${(error as Error).message}`, {
        cause: error,
        details: { path, ...(code === undefined ? {} : { osCode: code }), ...(syscall ? { syscall } : {}) },
      });
    }
    await held.commit();
    return { path, records: output.length, bytes: data.length, other };
  }

  /** A path as the session's user means it: `~/` is the agent user's home, relative is from cwd. */
  #filePath(path: string): string {
    if (path.includes('\0')) throw invalidParams('path must not contain NUL characters.');
    if (path === '~') return homedir();
    if (path.startsWith('~/')) return resolve(homedir(), path.slice(2));
    return resolve(this.cwd, path);
  }

  /** Resolves a wire selector as JobManager does, so subscriptions hold the jobs themselves. */
  #select(selector: WireSelector): Job[] {
    const items = Array.isArray(selector) ? selector : [selector];
    const out = new Set<Job>();
    for (const item of items) {
      if (typeof item === 'number' || /^\d+$/.test(item)) {
        out.add(this.jobs.job(item));
        continue;
      }
      const byInstance = this.jobs.get({ instanceIds: [item], includeChildren: true });
      const top = this.jobs.get({ names: [item] });
      const matches =
        byInstance.length > 0
          ? byInstance
          : top.length > 0
            ? top
            : this.jobs.get({ names: [item], includeChildren: true });
      // No match and no wildcard: let the manager raise its ERR_JOB_NOT_FOUND.
      if (matches.length === 0 && !/[*?]/.test(item)) this.jobs.job(item);
      for (const job of matches) out.add(job);
    }
    return [...out];
  }

  #subscribe(params: unknown, channel: ReliableChannel): JobInfo[] {
    const p = objectParams(params, 'job.subscribe');
    const subscriptionId = requiredString(p, 'subscriptionId');
    const keep = optionalBoolean(p, 'keep') ?? false;
    const follow = optionalBoolean(p, 'follow') ?? true;
    const jobs = this.#select(wireSelector(p.selector));
    const subscription = this.#newSubscription(subscriptionId, p);
    // After the response, so the client has the answer before the first record.
    queueMicrotask(() => void this.#pump(subscription, jobs, { keep, follow }, channel));
    return jobs.map(this.#info);
  }

  #newSubscription(id: string, params: Record<string, unknown>): Subscription {
    const batch = optionalBoolean(params, 'batch') ?? false;
    const packed = batch && (optionalBoolean(params, 'packed') ?? false);
    const clientAck = optionalBoolean(params, 'clientAck') ?? false;
    if (this.#subscriptions.has(id)) {
      throw invalidParams(`Subscription "${id}" already exists in this session.`, { subscriptionId: id });
    }
    const controller = new AbortController();
    const subscription: Subscription = {
      id,
      batch,
      packed,
      clientAck,
      sent: new Map(),
      signal: controller.signal,
      cancel: () => controller.abort(),
    };
    this.#subscriptions.set(id, subscription);
    return subscription;
  }

  /**
   * Moves records from the jobs into `job.records` events (or one `job.record` event each, for a
   * client that did not ask for batches), then sends `job.end`. It only takes a batch when the
   * channel has room: while no client is attached (or the client is slow), the channel's queue
   * reaches its high-water mark and the pump stops taking; then the spool (or the job's buffer)
   * fills and the producer is paused. Returns true when every record was sent.
   *
   * With `clientAck`, records are consumed as the client's `job.ack`s say its receiver took them;
   * the subscription stays until everything sent was acknowledged, or it is cancelled (then what
   * was not acknowledged goes back to the spools). Otherwise a batch is committed once the
   * channel acknowledged the event that carried its last record (invoke's temporary job).
   */
  async #pump(
    subscription: Subscription,
    jobs: Job[],
    options: { keep: boolean; follow: boolean },
    channel: ReliableChannel,
  ): Promise<boolean> {
    const { keep } = options;
    const { signal } = subscription;
    const cancelled = new Promise<void>((resolveCancel) => {
      if (signal.aborted) resolveCancel();
      else signal.addEventListener('abort', () => resolveCancel(), { once: true });
    });
    // Records sent but not yet acknowledged by the client, oldest first, with the event's seq.
    const unacked = new CommitQueue();
    const settle = (): void => unacked.commitUpTo(channel.ackedSeq);
    const offAck = channel.onAck(settle);
    let complete = false;
    try {
      for await (const { records = [], packed, commit, leaf, lastSeq } of this.#records.stream(jobs, signal, {
        keep,
        follow: options.follow,
        packed: subscription.packed,
      })) {
        let roomy = true;
        if (packed) {
          roomy = this.#event(
            'job.packed',
            { subscriptionId: subscription.id, entries: packed.bytes },
            channel,
          );
        } else if (subscription.batch) {
          roomy = this.#event('job.records', { subscriptionId: subscription.id, records }, channel);
        } else {
          for (const record of records) {
            roomy = this.#event('job.record', { subscriptionId: subscription.id, record }, channel);
          }
        }
        if (subscription.clientAck) {
          if (leaf && lastSeq !== undefined) {
            const entry = subscription.sent.get(leaf.id);
            if (entry) entry.sentSeq = lastSeq;
            else subscription.sent.set(leaf.id, { leaf, sentSeq: lastSeq, ackedSeq: 0 });
          }
        } else if (commit) {
          unacked.push(channel.sentSeq, commit);
        }
        settle();
        // Also rejects when the channel closes, which ends the pump.
        if (!roomy) await Promise.race([channel.drain(), cancelled]);
        if (signal.aborted) break;
      }
      complete = !signal.aborted;
      if (complete) {
        this.#event('job.end', { subscriptionId: subscription.id, jobs: jobs.map(this.#info) }, channel);
      }
      // The records count as delivered once the client says so; a takeover before that leaves
      // them in the spool for the next client.
      if (unacked.length > 0) await Promise.race([channel.whenAcked(unacked.lastSeq), cancelled]);
      settle();
      if (subscription.clientAck && complete) await Promise.race([allAcked(subscription), cancelled]);
    } catch {
      // The channel closed under the pump (session ended or link broke); nothing left to send to.
      complete = false;
    } finally {
      offAck();
      if (this.#subscriptions.get(subscription.id) === subscription)
        this.#subscriptions.delete(subscription.id);
    }
    return complete;
  }

  async #invoke(params: unknown, channel: ReliableChannel): Promise<JobInfo> {
    const p = objectParams(params, 'invoke');
    const subscriptionId = requiredString(p, 'subscriptionId');
    const subscription = this.#newSubscription(subscriptionId, p);
    this.#invokesRunning++;
    try {
      let job: Job;
      try {
        job = await this.#startWork(params, 'invoke');
      } catch (error) {
        this.#subscriptions.delete(subscriptionId);
        throw error;
      }
      const complete = await this.#pump(subscription, [job], { keep: false, follow: true }, channel);
      // Invoke is synchronous for the caller: wait for the end even if the records ran out early.
      await this.jobs.wait(job);
      const info = this.#info(job);
      if (complete) {
        await this.jobs.remove(job, { force: true }).catch(() => {});
        // The job is gone from the session already; deleting its files does not hold the answer
        // back (the record source finishes that before the session can be disposed).
        void this.#records.forget([job]).catch(() => {});
      }
      return info;
    } finally {
      this.#invokesRunning--;
    }
  }
}

/** Start keys remembered per job table (a host's views share their host's). */
const START_KEYS_KEPT = 4096;
const startKeys = new WeakMap<JobManager, Map<string, Promise<Job>>>();

function startedByKey(jobs: JobManager): Map<string, Promise<Job>> {
  let keys = startKeys.get(jobs);
  if (!keys) startKeys.set(jobs, (keys = new Map()));
  return keys;
}

/** Resolves once the client acknowledged every record the subscription sent. */
function allAcked(subscription: Subscription): Promise<void> {
  const done = (): boolean => [...subscription.sent.values()].every((each) => each.ackedSeq >= each.sentSeq);
  if (done()) return Promise.resolve();
  return new Promise((resolveAcked) => {
    subscription.onAck = () => {
      if (done()) resolveAcked();
    };
  });
}

/** Commits of records in flight, in send order; committed once the client acknowledged them. */
class CommitQueue {
  #seqs: number[] = [];
  #commits: Array<() => void> = [];
  #head = 0;

  get length(): number {
    return this.#seqs.length - this.#head;
  }

  /** The seq of the newest entry (0 when empty). */
  get lastSeq(): number {
    return this.length > 0 ? this.#seqs.at(-1)! : 0;
  }

  push(seq: number, commit: () => void): void {
    this.#seqs.push(seq);
    this.#commits.push(commit);
  }

  commitUpTo(ackedSeq: number): void {
    let last: (() => void) | undefined;
    while (this.#head < this.#seqs.length && this.#seqs[this.#head]! <= ackedSeq) {
      // Commits are cumulative per job; calling each is cheap (they coalesce), and covers
      // streams that move from one job to the next.
      last = this.#commits[this.#head];
      this.#commits[this.#head] = noop;
      this.#head++;
      last?.();
    }
    if (this.#head > 1024 && this.#head * 2 > this.#seqs.length) {
      this.#seqs = this.#seqs.slice(this.#head);
      this.#commits = this.#commits.slice(this.#head);
      this.#head = 0;
    }
  }
}

function noop(): void {}

/**
 * One output record as a line of the file, as the CLI prints it: a string as it is (one newline
 * added unless it ends with one), an error as its message and code, anything else inspected on
 * one line. So `receive … > FILE` gives the same bytes as `rjob receive … > FILE` locally.
 */
function outputLine(data: unknown): string {
  let text: string;
  if (typeof data === 'string') text = data;
  else if (isErrorLike(data))
    text = typeof data.code === 'string' ? `${data.message} (${data.code})` : data.message;
  else text = inspect(data, { depth: 6, breakLength: Number.POSITIVE_INFINITY, colors: false });
  return text.endsWith('\n') ? text : `${text}\n`;
}

function isErrorLike(value: unknown): value is { message: string; code?: unknown } {
  if (value instanceof Error) return true;
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { message?: unknown }).message === 'string' &&
    typeof (value as { name?: unknown }).name === 'string'
  );
}

/** Sends a response; a result that cannot be sent is answered with the error instead. */
function answer(
  channel: ReliableChannel,
  id: number,
  body: { result?: unknown; error?: ReturnType<typeof serializeError> },
): number {
  return answerReporting(channel, id, body).seq;
}

/** {@link answer}, telling whether the body itself went out (`sent`) or the error in its place. */
function answerReporting(
  channel: ReliableChannel,
  id: number,
  body: { result?: unknown; error?: ReturnType<typeof serializeError> },
): { seq: number; sent: boolean } {
  if (channel.state === 'closed') return { seq: 0, sent: false };
  const payload: Payload = { type: 'response', id, ...body };
  try {
    channel.send(payload);
  } catch (error) {
    // send() may have closed the channel on its way out.
    if ((channel.state as string) === 'closed') return { seq: 0, sent: false };
    try {
      channel.send({ type: 'response', id, error: serializeError(coded(error)) });
    } catch {
      return { seq: 0, sent: false };
    }
    return { seq: channel.sentSeq, sent: false };
  }
  return { seq: channel.sentSeq, sent: true };
}

/** Waits (bounded) until the client has acknowledged our message `seq`, or the channel closed. */
async function afterAck(channel: ReliableChannel, seq: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      channel.whenAcked(seq).catch(() => {}),
      new Promise((resolveWait) => (timer = setTimeout(resolveWait, ANSWER_ACK_WAIT_MS))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function coded(error: unknown): RjobError {
  if (RjobError.is(error)) return error;
  if (error instanceof TypeError || error instanceof RangeError) {
    return toRjobError(error, ErrorCode.InvalidArgument);
  }
  return toRjobError(error, AgentErrorCode.Internal);
}
