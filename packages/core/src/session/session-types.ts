/** The session client's options, handles and handlers: what callers of {@link Session} pass and get. */
import type { RjobError } from '../errors.js';
import type { JobManager } from '../job/job-manager.js';
import type { JobRecord } from '../job/records.js';
import type { RelayRequest } from '../protocol/messages.js';
import type { ReliableChannelOptions } from '../protocol/reliable-channel.js';
import type { RemoteJobInfo } from './remote-job-manager.js';
import type { SessionState, WireSelector } from './rpc.js';
import type { Session } from './session.js';

export interface SessionOptions {
  /** Friendly name (`-Name`). Default `Session<id>`. */
  name?: string;
  /** The name records are tagged with. Default: the target as a string. */
  computerName?: string;
  /** Identity token sent in the handshake (opaque to the protocol). Default: none. */
  token?: string;
  /** Time allowed for each handshake, in milliseconds. Default 10 000. */
  handshakeTimeoutMs?: number;
  /** Settings of the session's reliable channel (windows, heartbeats). Default: protocol defaults. */
  channel?: ReliableChannelOptions;
  /** Resume by itself when the link dies. Default true. */
  autoReconnect?: boolean;
  /** How long automatic reconnection keeps trying, in milliseconds. Default 240 000 (4 min). */
  reconnectWindowMs?: number;
  /** Wait after the first failed reconnect attempt, doubled after each failure. Default 500 ms. */
  initialBackoffMs?: number;
  /** Cap on the wait between reconnect attempts. Default 30 000 ms. */
  maxBackoffMs?: number;
  /**
   * Records queued by {@link Session.invoke} for a consumer that has not taken them yet, above which
   * the session stops granting credit to the agent. Default 1024.
   */
  recordHighWaterMark?: number;
  /**
   * Open the session on the identity's job host instead of giving it a job table of its own: its
   * jobs are the user's local jobs, shared by every host session of the same identity (any number
   * at once, none taking over another) and never expired by idle time. Closing the session leaves
   * those jobs as they are. Default false.
   */
  host?: boolean;
  /**
   * Open a relay to a session the agent holds for this client (`hosted.open`, OpenMessage.relay):
   * the session's requests and subscriptions go on to that one over the agent's connection.
   */
  relay?: RelayRequest;
}

/** What {@link connectSession} needs to take a session over: the values a CLI persists. */
export interface SessionCredentials {
  sessionId: string;
  resumeSecret: string;
}

export interface SessionStateChange {
  session: Session<unknown>;
  previous: SessionState;
  state: SessionState;
  /** Why the link was lost, or why the session broke. */
  reason?: RjobError;
}

/** A record as the session client hands it out: tagged with the computer it came from. */
export type RemoteRecord<T = unknown> = JobRecord<T> & { computerName: string };

export interface InvokeOptions {
  /**
   * Called with each record, in order. When it returns a promise, the next record waits for it
   * (and the agent is slowed down through credit). With `onRecord` the invocation's iterable
   * yields nothing. Default: records are queued for the iterable.
   */
  onRecord?: (record: RemoteRecord) => void | Promise<void>;
  /**
   * Invoke-Command -InDisconnectedSession: start the work as a job in this session and disconnect
   * the session at once. `result` is the started job's info (its id is how to receive it after
   * `connect`, or from a new client with `connectSession`); the iterable yields nothing. The job
   * runs on and keeps its output on the agent. Default false.
   */
  disconnected?: boolean;
}

/**
 * A running `invoke`: iterate it for the records (tagged with the computer name); `result` is the
 * temporary job's final info. Iterate it (or pass `onRecord`): unread records hold the agent back.
 */
export interface Invocation extends AsyncIterable<RemoteRecord> {
  readonly subscriptionId: string;
  readonly result: Promise<RemoteJobInfo>;
}

/** Handlers of one subscription (see {@link Session.subscribe}). */
export interface SubscriptionHandlers {
  /** A record; a returned promise holds back the next one (and credit). */
  onRecord(record: RemoteRecord): void | Promise<void>;
  /** The subscribed jobs finished and every record was sent. */
  onEnd(jobs: RemoteJobInfo[]): void;
  /** The session broke or closed before `onEnd`. */
  onSessionEnd?(reason: RjobError): void;
}

export interface Subscription {
  readonly subscriptionId: string;
  /** The jobs subscribed to, as the agent answered. */
  readonly jobs: Promise<RemoteJobInfo[]>;
  /**
   * Stops the stream on the agent and forgets the handlers. What was acknowledged is consumed;
   * every other record sent is left on the agent for the next receive.
   */
  cancel(): Promise<void>;
  /**
   * With `ack: 'manual'`: the receiver has these records (wrote them where they go); they may be
   * consumed. Acks are cumulative per job and sent in batches; {@link flush} sends them now.
   */
  ack(records: RemoteRecord | readonly RemoteRecord[]): void;
  /** Sends the acks not sent yet; resolves once the agent has them (or the session ended). */
  flush(): Promise<void>;
}

export interface SubscribeOptions {
  /** Leave the records on the agent. Default false: consumed once acknowledged. */
  keep?: boolean;
  subscriptionId?: string;
  /**
   * Keep streaming until the jobs finished (Receive-Job -Wait). Default true. False: what the jobs
   * hold now, then `onEnd` (Receive-Job), in bounded batches whatever their number.
   */
  follow?: boolean;
  /**
   * When a record counts as received (and is consumed on the agent): `auto`, once `onRecord`
   * returned (or its promise resolved); `manual`, once {@link Subscription.ack} says so (a
   * receiver that writes records somewhere acknowledges what it wrote). Default `auto`.
   */
  ack?: 'auto' | 'manual';
}

export interface CloseOptions {
  /**
   * Wait for the agent to confirm that the session ended (its jobs stopped and removed). Default
   * true. False, once every request was answered: the protocol's `close` message is sent and the
   * call returns without a round trip; the agent ends the session when it reads it (a CLI command
   * about to exit). With requests still in flight, the call waits as with true.
   */
  wait?: boolean;
}

export interface ReceiveSessionOptions {
  /**
   * `job`: running remote jobs become local RemoteJobs in `jobManager` (Receive-PSSession
   * -OutTarget Job). `host`: returns the records the remote jobs hold. Default `host`.
   */
  outTarget?: 'job' | 'host';
  /** Needed with `outTarget: 'job'`: where the local RemoteJobs are created. */
  jobManager?: JobManager;
  /** Which remote jobs. Default: every job that is running or still holds records. */
  selector?: WireSelector;
  /** With `host`: leave the records on the agent. Default false. */
  keep?: boolean;
}
