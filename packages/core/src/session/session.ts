/**
 * The session client (PowerShell's PSSession): one persistent session with an agent, reached
 * through any {@link Transport}. It speaks the RPC of `rpc.ts` over a {@link ReliableChannel}, so
 * requests, responses and record events survive link cuts; when a link dies it goes Disconnected
 * and resumes on a new link by itself for a while, then waits for {@link Session.connect}.
 */
import { randomUUID } from '../util/lazy-builtins.js';
import { deserializeError, ErrorCode, RjobError, type SerializedError } from '../errors.js';
import type { Job } from '../job/job.js';
import { clientHandshake } from '../protocol/handshake.js';
import type { SequencedMessage } from '../protocol/messages.js';
import { ProtocolErrorCode } from '../protocol/protocol-errors.js';
import { ReliableChannel } from '../protocol/reliable-channel.js';
import type { Transport } from '../transport/transport.js';
import { AckBatcher } from './ack-batcher.js';
import { RecordStream } from './record-stream.js';
import { SubscriptionTable } from './subscription-table.js';
import { RemoteJobManager, type RemoteJobInfo, reviveJobInfo } from './remote-job-manager.js';
import { remoteJobType } from './remote-job-type.js';
import type {
  MethodParams,
  MethodResult,
  SessionAvailability,
  SessionInfo,
  SessionMethod,
  SessionState,
  WireSelector,
  WorkRequest,
} from './rpc.js';
import type {
  CloseOptions,
  Invocation,
  InvokeOptions,
  ReceiveSessionOptions,
  RemoteRecord,
  SessionCredentials,
  SessionOptions,
  SessionStateChange,
  SubscribeOptions,
  Subscription,
  SubscriptionHandlers,
} from './session-types.js';
import {
  connectFailed,
  isFatalConnectError,
  isPermanentConnectError,
  SessionErrorCode,
} from './session-errors.js';

// @rjob/core's index exports the session's option and handler types from here.
export type * from './session-types.js';

/** Default time a session keeps trying to resume after its link died: 4 minutes. */
export const DEFAULT_RECONNECT_WINDOW_MS = 4 * 60_000;
/** Default wait before the first reconnect attempt after the first failure. */
export const DEFAULT_INITIAL_BACKOFF_MS = 500;
/** Default longest wait between two reconnect attempts. */
export const DEFAULT_MAX_BACKOFF_MS = 30_000;

type Params<M extends SessionMethod> =
  undefined extends MethodParams<M> ? [params?: MethodParams<M>] : [params: MethodParams<M>];

interface Pending {
  resolve(value: unknown): void;
  reject(error: Error): void;
}

let nextLocalId = 1;

/** Turns a wire error into the RjobError callers branch on. */
export function reviveError(error: SerializedError): RjobError {
  const revived = deserializeError(error);
  return RjobError.is(revived)
    ? revived
    : new RjobError(ErrorCode.Remote, revived.message, { cause: revived, details: { name: revived.name } });
}

/** A persistent session with one agent. Create it with {@link openSession} or {@link connectSession}. */
export class Session<Target = unknown> {
  /** Local id, unique in this process (the Id column of Get-PSSession). */
  readonly id: number;
  readonly transport: Transport<Target>;
  readonly target: Target;
  readonly computerName: string;
  /** The session's job table on the agent; its jobs and their results stay there. */
  readonly jobs: RemoteJobManager;

  readonly #options: SessionOptions;
  readonly #channel: ReliableChannel;
  #name: string;
  #state: SessionState = 'Disconnected';
  #reason: RjobError | undefined;
  #sessionId: string | undefined;
  #resumeSecret: string | undefined;
  #nextRequestId = 1;
  readonly #pending = new Map<number, Pending>();
  readonly #subscriptions: SubscriptionTable;
  readonly #listeners = new Set<(change: SessionStateChange) => void>();
  readonly #jobStateListeners = new Set<(job: RemoteJobInfo) => void>();
  #invocations = 0;
  #reconnect: AbortController | undefined;
  #reconnecting: Promise<void> | undefined;
  /** Set while the client itself dropped the link (disconnect, close): no automatic reconnect. */
  #leaving = false;
  #closing = false;
  #linking: Promise<void> | undefined;
  /** Counts successful opens and resumes, so a reconnect loop notices a fresh loss. */
  #openedCount = 0;
  #agentSoftware: string | undefined;

  /** @internal Use {@link openSession} or {@link connectSession}. */
  constructor(
    transport: Transport<Target>,
    target: Target,
    options: SessionOptions,
    credentials?: SessionCredentials,
  ) {
    this.id = nextLocalId++;
    this.transport = transport;
    this.target = target;
    this.#options = options;
    this.#name = options.name ?? `Session${this.id}`;
    this.computerName = options.computerName ?? String(target);
    this.#sessionId = credentials?.sessionId;
    this.#resumeSecret = credentials?.resumeSecret;
    this.#channel = new ReliableChannel(options.channel);
    this.#channel.onMessage((message) => this.#onMessage(message));
    this.#channel.onDisconnect((reason) => this.#onLinkLost(reason));
    this.#channel.onClose((reason) => this.#onChannelClosed(reason));
    this.#subscriptions = new SubscriptionTable(this.computerName, (info) => {
      for (const listener of [...this.#jobStateListeners]) {
        try {
          listener(info);
        } catch {
          // A listener's bug must not stall the channel.
        }
      }
    });
    this.jobs = new RemoteJobManager(this);
  }

  get name(): string {
    return this.#name;
  }

  /** What the agent called its software in the last handshake (e.g. `rjob/1.2.0`), if it said. */
  get agentSoftware(): string | undefined {
    return this.#agentSoftware;
  }
  get state(): SessionState {
    return this.#state;
  }
  /** Available when Opened and idle, Busy while an invoke runs, None otherwise. */
  get availability(): SessionAvailability {
    if (this.#state !== 'Opened') return 'None';
    return this.#invocations > 0 ? 'Busy' : 'Available';
  }
  /** Why the session is Disconnected or Broken. */
  get reason(): RjobError | undefined {
    return this.#reason;
  }
  /** The agent's id for the session: persist it (with the secret) to reconnect from elsewhere. */
  get sessionId(): string | undefined {
    return this.#sessionId;
  }
  /** The secret that proves the right to resume the session. Keep it as private as a key. */
  get resumeSecret(): string | undefined {
    return this.#resumeSecret;
  }
  /** True while automatic reconnection is trying. */
  get reconnecting(): boolean {
    return this.#reconnecting !== undefined;
  }

  /** Listens for state changes; returns a function that stops listening. */
  onStateChange(listener: (change: SessionStateChange) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Listens for `job.state` events the agent sends about the session's jobs. */
  onJobState(listener: (job: RemoteJobInfo) => void): () => void {
    this.#jobStateListeners.add(listener);
    return () => this.#jobStateListeners.delete(listener);
  }

  /**
   * Calls a method on the agent. While the session is reconnecting the request waits (it is sent
   * when the session resumes); a session that is Disconnected with nothing reconnecting it (after
   * {@link disconnect}, or once the reconnect window ran out) refuses a new request at once with
   * ERR_SESSION_DISCONNECTED: call {@link connect} first. Requests made before a disconnect() are
   * answered after the next connect(); those still waiting when the reconnect window runs out fail
   * with ERR_SESSION_DISCONNECTED. An error response rejects with the
   * revived RjobError; Broken or Closed rejects with ERR_SESSION_BROKEN / ERR_SESSION_CLOSED.
   */
  request<M extends SessionMethod>(method: M, ...args: Params<M>): Promise<MethodResult<M>> {
    if (this.#state === 'Closed' || this.#state === 'Broken') return Promise.reject(this.#endedError());
    if (this.#idle()) return Promise.reject(this.#disconnectedError());
    const id = this.#nextRequestId++;
    const params = args[0];
    return new Promise<MethodResult<M>>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
      try {
        this.#channel.send({
          type: 'request',
          id,
          method,
          ...(params === undefined ? {} : { params }),
        });
      } catch (error) {
        this.#pending.delete(id);
        reject(error);
      }
    });
  }

  /** This session's description on the agent. */
  async info(): Promise<SessionInfo> {
    const info = await this.request('session.info');
    if (info?.name) this.#name = info.name;
    return info;
  }

  /** Sessions this identity holds on the agent (Get-PSSession -ComputerName). */
  list(): Promise<SessionInfo[]> {
    return this.request('session.list');
  }

  /**
   * Runs work synchronously (Invoke-Command): records stream back tagged with the computer name,
   * then `result` gives the temporary job's final info.
   */
  invoke(work: WorkRequest, options: InvokeOptions = {}): Invocation {
    const subscriptionId = randomUUID();
    if (options.disconnected) {
      const result = (async () => {
        const info = await this.jobs.start(work);
        await this.disconnect();
        return info;
      })();
      result.catch(() => {});
      return {
        subscriptionId,
        result,
        // Nothing streams: the records wait on the agent. Iterating still surfaces a failure.
        [Symbol.asyncIterator]: () => ({
          next: async (): Promise<IteratorResult<RemoteRecord>> => {
            await result;
            return { done: true, value: undefined };
          },
        }),
      };
    }
    const stream = new RecordStream<RemoteRecord>(this.#options.recordHighWaterMark ?? 1024);
    const onRecord = options.onRecord ?? ((record: RemoteRecord) => stream.push(record));
    this.#subscriptions.add(subscriptionId, {
      onRecord,
      onEnd: () => {},
    });
    this.#invocations++;
    const result = this.request('invoke', { ...work, subscriptionId }).then(
      (info) => reviveJobInfo(info, this.computerName),
      (error: unknown) => {
        stream.fail(error);
        throw error;
      },
    );
    const done = (): void => {
      this.#invocations--;
      this.#subscriptions.remove(subscriptionId);
      stream.end();
    };
    result.then(done, done);
    // The caller may only iterate; a failure then surfaces there, not as an unhandled rejection.
    result.catch(() => {});
    return {
      subscriptionId,
      result,
      [Symbol.asyncIterator]: () => stream[Symbol.asyncIterator](),
    };
  }

  /**
   * Streams the records of remote jobs (`job.subscribe`), consuming them on the agent unless
   * `keep`. Used by RemoteJob and `receive --wait`. The subscription survives reconnects.
   */
  subscribe(
    selector: WireSelector,
    handlers: SubscriptionHandlers,
    options: SubscribeOptions = {},
  ): Subscription {
    const subscriptionId = options.subscriptionId ?? randomUUID();
    const keep = options.keep ?? false;
    const acks = new AckBatcher(subscriptionId, (params) => this.request('job.ack', params));
    this.#subscriptions.add(
      subscriptionId,
      handlers,
      !keep && options.ack !== 'manual' ? (record) => acks.add(record) : undefined,
    );
    const jobs = this.request('job.subscribe', {
      selector,
      subscriptionId,
      ...(keep ? { keep } : { clientAck: true }),
      ...(options.follow === false ? { follow: false } : {}),
    }).then(
      (infos) => {
        this.#subscriptions.streaming(
          subscriptionId,
          infos.map((info) => info.id),
        );
        return infos.map((info) => reviveJobInfo(info, this.computerName));
      },
      (error: unknown) => {
        this.#subscriptions.remove(subscriptionId);
        throw error;
      },
    );
    jobs.catch(() => {});
    return {
      subscriptionId,
      jobs,
      cancel: async () => {
        const live = this.#subscriptions.remove(subscriptionId);
        if (this.#state === 'Closed' || this.#state === 'Broken') return;
        // The acks first: the agent consumes what was taken, then gives the rest back.
        await acks.flush();
        if (live) await this.request('job.unsubscribe', { subscriptionId });
      },
      ack: (records) => {
        if (keep) return;
        if (Array.isArray(records)) for (const record of records) acks.add(record);
        else acks.add(records as RemoteRecord);
      },
      flush: () => acks.flush(),
    };
  }

  /**
   * Receive-PSSession. With `outTarget: 'job'`, the session's running remote jobs (and finished
   * ones still holding records) become local RemoteJobs in `jobManager`, which then receive the
   * rest of their output; with `host`, returns the records the jobs hold.
   */
  async receive(options: ReceiveSessionOptions & { outTarget: 'job' }): Promise<Job[]>;
  async receive(options?: ReceiveSessionOptions): Promise<RemoteRecord[]>;
  async receive(options: ReceiveSessionOptions = {}): Promise<Job[] | RemoteRecord[]> {
    if (this.#state !== 'Opened') await this.connect();
    let remote =
      options.selector === undefined
        ? (await this.jobs.get()).filter((job) => job.hasMoreData || !isFinished(job.state))
        : await this.#selected(options.selector);
    // Jobs this client already mirrors keep their RemoteJob; a second one would split the output.
    const mirrored = this.#subscriptions.streamedJobIds();
    remote = remote.filter((job) => !mirrored.has(job.id));
    if (options.outTarget === 'job') {
      const manager = options.jobManager;
      if (!manager) {
        throw new RjobError(ErrorCode.InvalidArgument, 'receive({ outTarget: "job" }) needs a jobManager.');
      }
      const type = remoteJobType();
      const out: Job[] = [];
      for (const job of remote) {
        out.push(
          await manager.start(
            type,
            { session: this, remoteJob: job.id, command: job.command },
            { name: job.name, location: this.computerName },
          ),
        );
      }
      return out;
    }
    if (remote.length === 0) return [];
    return this.jobs.receive(
      remote.map((job) => job.id),
      options.keep === undefined ? {} : { keep: options.keep },
    );
  }

  /**
   * Disconnect-PSSession: tells the agent the client leaves on purpose (its jobs go on), then
   * drops the link. The session is Disconnected until {@link connect}.
   */
  async disconnect(): Promise<void> {
    this.#cancelReconnect();
    if (this.#state !== 'Opened') {
      if (this.#state === 'Disconnected') return;
      throw this.#endedError();
    }
    try {
      await this.request('session.disconnect');
      // Let the ack of that response reach the agent before the link goes, so nothing is replayed.
      await new Promise<void>((resolve) => setImmediate(resolve));
    } finally {
      // Even when the agent could not record it, the client leaves as asked.
      this.#leaving = true;
      this.#channel.detach(new RjobError(ProtocolErrorCode.LinkClosed, 'Disconnected by the client.'));
    }
  }

  /**
   * Connect-PSSession: resumes the session on a new link; every message the link lost is replayed
   * exactly once. Rejects (and the session is Broken) when the agent refuses the resume.
   */
  async connect(): Promise<void> {
    if (this.#state === 'Opened') return;
    if (this.#state === 'Closed' || this.#state === 'Broken') throw this.#endedError();
    this.#cancelReconnect();
    // An automatic attempt in flight was just cancelled (it drops its link if it got one); let it
    // settle, then make our own.
    await this.#linking?.catch(() => {});
    // Read again: the attempt that settled may have changed it.
    const settled: SessionState = this.state;
    if (settled === 'Opened') return;
    if (settled !== 'Disconnected') throw this.#endedError();
    try {
      await this.#link();
    } catch (error) {
      if (isFatalConnectError(error)) this.#broken(error as RjobError);
      throw error;
    }
  }

  /**
   * Remove-PSSession: ends the session on the agent (its jobs are stopped and removed). A session
   * that is not Opened is only closed here; the agent expires it when it has been idle long enough.
   */
  async close(options: CloseOptions = {}): Promise<void> {
    if (this.#state === 'Closed' || this.#state === 'Broken') return;
    this.#cancelReconnect();
    this.#closing = true;
    // Without waiting, and with every request answered (nothing the agent could still be working
    // on for us), the channel's `close` message alone ends the session on the agent.
    const answered = options.wait === false && this.#pending.size === 0;
    if (this.#state === 'Opened' && !answered) {
      try {
        await this.request('session.close');
      } catch {
        // The agent may close the channel before its answer is read; the session ends either way.
      }
    }
    this.#channel.close('Session closed by the client.');
    this.#setState('Closed');
  }

  /** @internal Opens or resumes on a new link. */
  async open(): Promise<void> {
    await this.#link();
  }

  // ---------------------------------------------------------------------------------------------

  async #selected(selector: WireSelector): Promise<RemoteJobInfo[]> {
    const items = Array.isArray(selector) ? selector : [selector];
    const ids = items.filter((item): item is number => typeof item === 'number' || /^\d+$/.test(`${item}`));
    const names = items.filter((item): item is string => typeof item === 'string' && !/^\d+$/.test(item));
    const byId = ids.length > 0 ? await this.jobs.get({ ids: ids.map(Number) }) : [];
    const byName = names.length > 0 ? await this.jobs.get({ names }) : [];
    return [...byId, ...byName];
  }

  #link(signal?: AbortSignal): Promise<void> {
    // One handshake at a time: connect() during an automatic attempt joins it.
    this.#linking ??= this.#establish(signal).finally(() => {
      this.#linking = undefined;
    });
    return this.#linking;
  }

  async #establish(signal?: AbortSignal): Promise<void> {
    let link: Awaited<ReturnType<Transport<Target>['connect']>>;
    try {
      link = await this.transport.connect(this.target, {
        ...(signal ? { signal } : {}),
        maxFrameBytes: this.#channel.maxFrameBytes,
      });
    } catch (error) {
      throw connectFailed(error, this.computerName);
    }
    // A channel that was never attached (connectSession in a new process) has none of the
    // session's sequence state, so it cannot resume; it takes the session over instead.
    const resume =
      this.#sessionId !== undefined && this.#resumeSecret !== undefined
        ? {
            sessionId: this.#sessionId,
            resumeSecret: this.#resumeSecret,
            ...(this.#channel.pristine ? { takeover: true } : {}),
          }
        : undefined;
    let result: Awaited<ReturnType<typeof clientHandshake>>;
    try {
      result = await clientHandshake(link, {
        channel: this.#channel,
        ...(this.#options.token === undefined ? {} : { token: this.#options.token }),
        ...(this.#options.handshakeTimeoutMs === undefined
          ? {}
          : { handshakeTimeoutMs: this.#options.handshakeTimeoutMs }),
        software: 'rjob-session-client',
        ...(resume
          ? { resume }
          : this.#options.host
            ? { host: true }
            : this.#options.relay
              ? { relay: this.#options.relay }
              : {}),
      });
    } catch (error) {
      throw isFatalConnectError(error) ? error : connectFailed(error, this.computerName);
    }
    this.#sessionId = result.sessionId;
    this.#agentSoftware = result.software;
    if (result.resumeSecret !== undefined) this.#resumeSecret = result.resumeSecret;
    this.#leaving = false;
    if (signal?.aborted || this.#closing) {
      this.#leaving = true;
      this.#channel.detach('Reconnect cancelled.');
      return;
    }
    this.#reason = undefined;
    this.#openedCount++;
    this.#setState('Opened');
  }

  #onLinkLost(reason: RjobError): void {
    if (this.#state === 'Closed' || this.#state === 'Broken') return;
    this.#setState('Disconnected', reason);
    if (this.#leaving || this.#closing || this.#options.autoReconnect === false) return;
    this.#startReconnect();
  }

  #startReconnect(): void {
    // A running loop sees the new loss itself: it only stops once the session is not Disconnected.
    if (this.#reconnecting) return;
    const controller = new AbortController();
    this.#reconnect = controller;
    const windowMs = this.#options.reconnectWindowMs ?? DEFAULT_RECONNECT_WINDOW_MS;
    const initialBackoffMs = this.#options.initialBackoffMs ?? DEFAULT_INITIAL_BACKOFF_MS;
    const maxBackoffMs = this.#options.maxBackoffMs ?? DEFAULT_MAX_BACKOFF_MS;
    let gaveUp = false;
    const loop = async (): Promise<void> => {
      let opened = -1;
      let backoffMs = initialBackoffMs;
      let deadlineMs = 0;
      while (!controller.signal.aborted && this.#state === 'Disconnected') {
        if (opened !== this.#openedCount) {
          // A new loss after a successful resume gets a whole window of its own.
          opened = this.#openedCount;
          backoffMs = initialBackoffMs;
          deadlineMs = Date.now() + windowMs;
        }
        try {
          await this.#link(controller.signal);
          continue;
        } catch (error) {
          if (isFatalConnectError(error)) {
            this.#broken(error as RjobError);
            return;
          }
          this.#reason = error as RjobError;
          if (isPermanentConnectError(error)) {
            gaveUp = true;
            return;
          }
        }
        const remainingMs = deadlineMs - Date.now();
        if (remainingMs <= 0) {
          gaveUp = true;
          return;
        }
        await sleep(Math.min(backoffMs, remainingMs), controller.signal);
        backoffMs = Math.min(backoffMs * 2, maxBackoffMs);
      }
    };
    this.#reconnecting = loop().finally(() => {
      if (this.#reconnect !== controller) return;
      this.#reconnect = undefined;
      this.#reconnecting = undefined;
      if (controller.signal.aborted || this.#state !== 'Disconnected') return;
      // The window is over: what waited for the reconnect fails now (ERR_SESSION_DISCONNECTED),
      // listeners are told, and the state stays Disconnected for a later connect().
      if (gaveUp) {
        this.#failPending(this.#disconnectedError());
        this.#emit('Disconnected', 'Disconnected');
      }
      // Lost again between the loop's last look and now: go on trying.
      else if (!this.#leaving && !this.#closing) this.#startReconnect();
    });
  }

  #cancelReconnect(): void {
    this.#reconnect?.abort();
    this.#reconnect = undefined;
    this.#reconnecting = undefined;
  }

  #broken(reason: RjobError): void {
    if (this.#state === 'Closed' || this.#state === 'Broken') return;
    this.#cancelReconnect();
    this.#reason = reason;
    this.#closing = true;
    // The channel is useless now; closing it fails pending requests and subscriptions.
    this.#channel.close('Session broken.');
    this.#setState('Broken', reason);
  }

  #onChannelClosed(reason: RjobError): void {
    const ended =
      this.#state === 'Broken' || this.#closing
        ? this.#endedError()
        : new RjobError(SessionErrorCode.SessionBroken, `Session ${this.#name} ended: ${reason.message}`, {
            cause: reason,
          });
    if (!this.#closing && this.#state !== 'Broken' && this.#state !== 'Closed') {
      this.#reason = reason;
      this.#setState('Broken', reason);
    }
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(ended);
    this.#subscriptions.end(ended);
  }

  #onMessage(message: SequencedMessage): void | Promise<void> {
    if (message.type === 'response') {
      const pending = this.#pending.get(message.id);
      if (!pending) return;
      this.#pending.delete(message.id);
      if (message.error) pending.reject(reviveError(message.error));
      else pending.resolve(message.result);
      return;
    }
    if (message.type === 'event') return this.#subscriptions.event(message.name, message.data);
    // Protocol v1's RPC has no agent-to-client requests; say so rather than leave it hanging.
    this.#channel.send({
      type: 'response',
      id: message.id,
      error: {
        name: 'RjobError',
        code: ProtocolErrorCode.UnknownMethod,
        message: `The session client does not serve ${message.method}.`,
      },
    });
  }

  /**
   * @internal For an agent relaying this session to its own clients: the events of subscription
   * `subscriptionId` go to `sink` as they came (the sink's promise holds the channel back, so a slow
   * client slows the agent here) instead of being decoded. Returns a function that stops it.
   */
  relayEvents(
    subscriptionId: string,
    sink: (name: string, data: unknown) => void | Promise<void>,
  ): () => void {
    return this.#subscriptions.relay(subscriptionId, sink);
  }

  #setState(state: SessionState, reason?: RjobError): void {
    const previous = this.#state;
    if (previous === state) return;
    this.#state = state;
    if (reason) this.#reason = reason;
    this.#emit(previous, state);
  }

  #emit(previous: SessionState, state: SessionState): void {
    const change: SessionStateChange = { session: this as Session<unknown>, previous, state };
    if (this.#reason && state !== 'Opened') change.reason = this.#reason;
    for (const listener of [...this.#listeners]) {
      try {
        listener(change);
      } catch {
        // A listener's bug must not wedge the session.
      }
    }
  }

  /** Disconnected after an open, with no reconnect running or linking: nothing will send a request. */
  #idle(): boolean {
    return (
      this.#state === 'Disconnected' &&
      this.#openedCount > 0 &&
      this.#reconnecting === undefined &&
      this.#linking === undefined
    );
  }

  #disconnectedError(): RjobError {
    return new RjobError(
      SessionErrorCode.SessionDisconnected,
      `Session ${this.#name} is Disconnected; connect it first.`,
      {
        ...(this.#reason ? { cause: this.#reason } : {}),
        details: { sessionId: this.#sessionId, computerName: this.computerName },
      },
    );
  }

  /**
   * Requests still waiting when nothing will reconnect. One already sent may yet run on the agent
   * if the session is resumed later; its answer then finds nobody waiting.
   */
  #failPending(error: RjobError): void {
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(error);
  }

  #endedError(): RjobError {
    if (this.#state === 'Broken') {
      return new RjobError(SessionErrorCode.SessionBroken, `Session ${this.#name} is broken.`, {
        ...(this.#reason ? { cause: this.#reason } : {}),
        details: { sessionId: this.#sessionId },
      });
    }
    return new RjobError(SessionErrorCode.SessionClosed, `Session ${this.#name} is closed.`, {
      details: { sessionId: this.#sessionId },
    });
  }
}

function isFinished(state: string): boolean {
  return state === 'Completed' || state === 'Failed' || state === 'Stopped';
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

/**
 * New-PSSession: connects to `target`, opens a session on its agent and resolves once it is
 * Opened. Rejects with ERR_CONNECT_FAILED (or the transport's `*_UNREACHABLE` code, or the
 * handshake's refusal) when it cannot.
 */
export async function openSession<Target>(
  transport: Transport<Target>,
  target: Target,
  options: SessionOptions = {},
): Promise<Session<Target>> {
  const session = new Session(transport, target, options);
  await session.open();
  // A host session is the client's alone and never listed: its name stays on this side.
  if (options.name !== undefined && !options.host) {
    try {
      await session.request('session.configure', { name: options.name });
    } catch {
      // An agent that cannot name sessions still serves them; the local name stands.
    }
  }
  return session;
}

/**
 * Connect-PSSession from a client that did not open the session (another process, after a
 * crash): takes `sessionId` over with its `resumeSecret` (docs/protocol.md, "Session takeover").
 * A client still holding the session loses it (ERR_SESSION_TAKEN_OVER); requests and records in
 * flight to it are dropped, and records its jobs still hold are there for {@link Session.receive}.
 * Rejects with ERR_SESSION_NOT_FOUND when the agent does not know the session for this identity.
 */
export async function connectSession<Target>(
  transport: Transport<Target>,
  target: Target,
  credentials: SessionCredentials & SessionOptions,
): Promise<Session<Target>> {
  const { sessionId, resumeSecret, ...options } = credentials;
  const session = new Session(transport, target, options, { sessionId, resumeSecret });
  await session.open();
  return session;
}
