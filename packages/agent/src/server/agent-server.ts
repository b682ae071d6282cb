/**
 * The agent runtime every door serves: it answers the handshake on each link, opens sessions or
 * resumes them (identity and secret checked), and owns the job types the sessions share. A link
 * is only a way in; sessions, their jobs and their subscriptions outlive it.
 */
import { createHash, randomUUID } from 'node:crypto';
import { homedir, hostname, userInfo } from 'node:os';
import { join } from 'node:path';
import {
  type JobType,
  ProtocolErrorCode,
  RjobError,
  SessionErrorCode,
  type SessionInfo,
  type TransportChannel,
} from '@rjob/core';
import { FrameBudget, ReliableChannel, serverHandshake } from '@rjob/core/protocol';
import { processJobType } from '@rjob/job-process';
import { threadJobType } from '@rjob/job-thread';
import { lockStateDir, type StateDirLock } from '../state-lock.js';
import { JobStore } from '../store/job-store.js';
import type { AgentInfo } from './agent-control.js';
import { pluginInfo } from './plugin-info.js';
import { AgentSession, type AgentSessionInit } from './agent-session.js';
import { JobQueue } from './job-queue.js';
import { HostedSessions } from './hosted-sessions.js';
import { MemoryRecords } from './memory-records.js';
import { RelaySession, relayRefused } from './relay-session.js';
import type {
  AgentServerOptions,
  AttachOptions,
  AttachResult,
  RestoreReport,
} from './agent-server-options.js';
import { SpooledRecords } from './spooled-records.js';
import { targetRemoteJobType } from './remote-jobs.js';
import { hashResumeSecret, newResumeSecret } from './secret.js';
import { sessionProcessJobType, sharedJobType } from './session-job-types.js';

/**
 * A spooled job's in-memory buffer only stages records for its spool: a few MiB keep the spool's
 * writer busy, and a job printing faster than the disk takes it is paused here instead of piling
 * up the 64 MiB a memory-only agent allows (measured: that was most of a 1 GiB job's agent RSS).
 */
const SPOOLED_MAX_BUFFERED_BYTES = 4 * 1024 * 1024;

/** Two hours, as PowerShell's default idle timeout for disconnected sessions. */
export const DEFAULT_IDLE_TIMEOUT_MS = 2 * 60 * 60 * 1000;

export class AgentServer {
  readonly stateDir: string;
  readonly computerName: string;
  readonly #options: AgentServerOptions;
  readonly #sessions = new Map<string, AgentSession>();
  readonly #threadType: JobType;
  readonly #processType: JobType;
  /** Plugins' job types, and RemoteJob when transports were given. */
  readonly #extraTypes: JobType[];
  readonly #idleTimeoutMs: number;
  readonly #store: Promise<JobStore> | undefined;
  readonly #lock: Promise<StateDirLock> | undefined;
  /** Waiting jobs and job groups (`rjob start --after/--group`, `rjob group`), for every session. */
  readonly #queue: JobQueue;
  /** Set while {@link restore} runs: links wait for it, so a resume finds the restored session. */
  #restoring: Promise<unknown> | undefined;
  #closed = false;
  /** The first session opened on this server (see {@link AgentInfo.firstClient}). */
  #firstOpened: string | undefined;
  /** Sessions this agent holds for its clients (`hosted.*`), when it has transports to reach them. */
  readonly #hosted: HostedSessions | undefined;
  /** Clients' relays to those sessions (OpenMessage.relay), by id. */
  readonly #relays = new Map<string, RelaySession>();
  /**
   * The cap on bytes of partly received frames shared by every link of this agent: the doors give
   * it to each connection's frame decoder, and a connection that would pass it is closed with
   * ERR_FRAME_BUDGET, so many stalled half-sent frames cannot grow the agent without bound.
   */
  readonly frameBudget: FrameBudget;

  constructor(options: AgentServerOptions) {
    this.frameBudget = new FrameBudget(options.frameBudgetBytes);
    this.#options = options;
    this.stateDir = options.stateDir;
    this.computerName = options.computerName ?? hostname();
    this.#idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    this.#threadType = threadJobType(options.thread);
    this.#processType = processJobType(options.process);
    this.#queue = new JobQueue(
      (options.persist ?? true) ? { file: join(options.stateDir, 'groups.json') } : {},
    );
    this.#hosted = options.transports?.length ? new HostedSessions(options.transports) : undefined;
    this.#extraTypes = [
      ...(options.jobTypes ?? []),
      ...(options.transports?.length ? [targetRemoteJobType(options.transports, this.#hosted)] : []),
    ];
    if (options.persist ?? true) {
      // The store is opened only under the lock: a second agent never loads (or rewrites) it.
      this.#lock = lockStateDir(options.stateDir);
      this.#lock.catch(() => {});
      this.#store = this.#lock.then(() => JobStore.open({ dir: options.stateDir }));
      // Reported by the first open that needs it; do not crash the agent in the meantime.
      this.#store.catch(() => {});
    }
  }

  /**
   * Resolves once this agent holds its state directory (and its store is open); rejects with
   * ERR_AGENT_RUNNING when another live agent holds it. Doors are opened after this, so a refused
   * agent never answers a client. Resolves at once without `persist`.
   */
  async ready(): Promise<void> {
    await this.#store;
  }

  /**
   * Runs the server side of the handshake (`door.identity`, when given, is the link's identity) on a new link and puts the session's channel on it.
   * Rejects with the coded error when the handshake fails; the link is then already closed, and
   * nothing else is affected.
   */
  async attach(link: TransportChannel, door: AttachOptions = {}): Promise<AttachResult> {
    if (this.#closed) {
      const error = new RjobError(ProtocolErrorCode.ChannelClosed, 'The agent is shutting down.');
      link.close(error);
      throw error;
    }
    await this.#restoring?.catch(() => {});
    let identity: string | undefined;
    const result = await serverHandshake(link, {
      software: this.#options.software ?? 'rjob-agent',
      ...(this.#options.handshakeTimeoutMs === undefined
        ? {}
        : { handshakeTimeoutMs: this.#options.handshakeTimeoutMs }),
      authenticate: async (token) => {
        identity =
          door.identity ??
          (this.#options.authenticate ? await this.#options.authenticate(token) : userInfo().username);
        if (typeof identity !== 'string' || identity.length === 0) {
          throw new RjobError(ProtocolErrorCode.Unauthorized, 'Identity refused.');
        }
      },
      open: async ({ host, relay }) => {
        if (relay) {
          if (!this.#hosted) {
            throw new RjobError(
              ProtocolErrorCode.UnknownMethod,
              'This agent holds no sessions for its clients (it has no transports).',
            );
          }
          let held: Awaited<ReturnType<HostedSessions['hold']>>;
          try {
            held = await this.#hosted.hold(identity!, relay);
          } catch (error) {
            throw relayRefused(relay.name, error);
          }
          const id = randomUUID();
          const session = new RelaySession(id, held, this.#options.channel, () => this.#relays.delete(id));
          this.#relays.set(id, session);
          return { sessionId: id, resumeSecret: newResumeSecret(), channel: session.channel };
        }
        const store = await this.#store;
        const resumeSecret = newResumeSecret();
        const session = this.#createSession({
          id: randomUUID(),
          identity: identity!,
          secretDigest: hashResumeSecret(resumeSecret),
          store,
          ...(host ? { kind: 'view' as const, host: this.#hostOf(identity!, store) } : {}),
        });
        // `agent.info`'s firstClient: the session that a daemon started on demand was started for.
        this.#firstOpened ??= session.id;
        return { sessionId: session.id, resumeSecret, channel: session.channel };
      },
      resume: ({ sessionId, resumeSecret }) => {
        const session = this.#sessions.get(sessionId);
        // One answer for every failure, so a prober cannot tell an id from a wrong secret.
        if (!session?.canResume(identity!, resumeSecret)) {
          throw new RjobError(ProtocolErrorCode.SessionNotFound, 'No such session.');
        }
        // With `takeover`, the handshake moves the session to a successor channel, which the
        // session adopts through the channel's onTakeover.
        return session.channel;
      },
    });
    this.#sessions.get(result.sessionId)?.attached();
    return { sessionId: result.sessionId, identity: identity!, resumed: result.resumed };
  }

  /**
   * The sessions held for `identity` (every identity's when omitted). The job hosts and the
   * sessions on them are the local jobs' plumbing, not sessions a user opened: not listed.
   */
  sessions(identity?: string): SessionInfo[] {
    return [...this.#sessions.values()]
      .filter((session) => session.kind === 'session')
      .filter((session) => identity === undefined || session.identity === identity)
      .map((session) => session.info());
  }

  /**
   * The identity's job host, created on first use. Its id is derived from the identity, so the
   * host restored after a restart is the same one; its resume secret is never handed out.
   */
  #hostOf(identity: string, store: JobStore | undefined): AgentSession {
    const id = hostSessionId(identity);
    const existing = this.#sessions.get(id);
    if (existing) return existing;
    const host = this.#createSession({
      id,
      identity,
      secretDigest: hashResumeSecret(newResumeSecret()),
      store,
      kind: 'host',
    });
    // Saved at once: its jobs are stored under it, and a restart restores them through it.
    host.persist();
    return host;
  }

  /**
   * `session.claim`: another Disconnected session of `identity` gets a new resume secret for the
   * asking client (Connect-PSSession from another computer). One answer for unknown and another
   * identity's, as for a resume.
   */
  #claim(
    identity: string,
    askingId: string,
    sessionId: string,
  ): { sessionId: string; resumeSecret: string; info: SessionInfo } {
    const session = this.#sessions.get(sessionId);
    if (
      !session ||
      session.identity !== identity ||
      session.kind !== 'session' ||
      session.id === askingId ||
      session.state === 'Closed'
    ) {
      throw new RjobError(ProtocolErrorCode.SessionNotFound, 'No such session.');
    }
    if (session.state === 'Opened') {
      throw new RjobError(
        SessionErrorCode.SessionInUse,
        `Session ${session.name} is in use by another client; disconnect it there first.`,
      );
    }
    const resumeSecret = newResumeSecret();
    session.newSecret(hashResumeSecret(resumeSecret));
    return { sessionId, resumeSecret, info: session.info() };
  }

  /** `agent.info`: this process, and the identity's sessions and jobs. */
  #agentInfo(identity: string, askingSessionId: string): AgentInfo {
    let sessions = 0;
    let jobs = 0;
    let runningJobs = 0;
    for (const session of this.#sessions.values()) {
      if (session.identity !== identity || session.kind === 'view') continue;
      if (session.kind === 'session' && session.id !== askingSessionId) sessions++;
      for (const job of session.jobs.get()) {
        jobs++;
        if (!job.finished) runningJobs++;
      }
    }
    const uptimeMs = Math.round(process.uptime() * 1000);
    return {
      software: this.#options.software ?? 'rjob-agent',
      pid: process.pid,
      startedAtMs: Date.now() - uptimeMs,
      uptimeMs,
      sessions,
      jobs,
      runningJobs,
      firstClient: this.#firstOpened === askingSessionId,
      ...pluginInfo(
        [this.#threadType, this.#processType, ...this.#extraTypes],
        this.#options.transports ?? [],
        this.#options.pluginErrors ?? [],
      ),
    };
  }

  /** A session by id, for diagnostics and tests. */
  session(sessionId: string): AgentSession | undefined {
    return this.#sessions.get(sessionId);
  }

  /**
   * Ends every session (stopping their jobs) and releases the shared job types. What is persisted
   * (sessions, finished jobs, their unreceived records) stays on disk for the next agent.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // Jobs waiting for their turn stay waiting for the next agent; none starts while others stop.
    this.#queue.close();
    for (const relay of [...this.#relays.values()]) relay.end();
    await Promise.allSettled(
      [...this.#sessions.values()].map((session) =>
        session.end('Agent shutting down.', { keepStored: true }),
      ),
    );
    await Promise.allSettled(
      [this.#threadType, this.#processType, ...this.#extraTypes].map((type) => type.dispose?.()),
    );
    // Held sessions stay on their hosts, Disconnected, for the client to take up again.
    await this.#hosted?.dispose();
    // Let writes already under way land, so the state directory is consistent (and removable).
    await (await this.#store?.catch(() => undefined))?.idle();
    await (await this.#lock?.catch(() => undefined))?.release();
  }

  /**
   * Brings back the sessions and jobs a previous agent left in the store: finished jobs with their
   * unreceived records, unfinished ones Failed ("agent restarted"). The sessions wait,
   * Disconnected, for a client with their secret (a new client object: channel counters do not
   * survive the restart). Call once, before serving. Does nothing without `persist`.
   */
  restore(): Promise<RestoreReport> {
    const restoring = this.#restore();
    this.#restoring = restoring;
    return restoring;
  }

  async #restore(): Promise<RestoreReport> {
    const report: RestoreReport = { sessions: 0, jobs: 0, failedOnRestart: 0, skipped: 0 };
    const store = await this.#store;
    if (!store) return report;
    const snapshot = await store.load();
    report.failedOnRestart = snapshot.failedOnRestart.length;
    report.skipped = snapshot.skipped.length;
    for (const stored of snapshot.sessions) {
      if (this.#sessions.has(stored.sessionId)) continue;
      const session = this.#createSession({
        id: stored.sessionId,
        identity: stored.identity,
        secretDigest: Buffer.from(stored.resumeSecretHash),
        store,
        cwd: stored.workingDirectory,
        ...(stored.host ? { kind: 'host' as const } : {}),
        ...(stored.idleTimeoutMs === undefined ? {} : { idleTimeoutMs: stored.idleTimeoutMs }),
        restored: {
          createdAtMs: stored.createdAt.getTime(),
          lastSeenAtMs: stored.lastSeenAt.getTime(),
          env: stored.env,
          ...(stored.name === undefined ? {} : { name: stored.name }),
        },
      });
      // Every entry of the session, children too: restoreJobs puts each child back under its
      // parent (job.startGroup's jobs); report.jobs counts the top-level ones.
      const jobs = snapshot.jobs.filter((job) => job.sessionId === stored.sessionId);
      await session.restoreJobs(jobs);
      report.sessions++;
      report.jobs += jobs.filter((job) => job.parentId === undefined).length;
    }
    return report;
  }

  #createSession(init: {
    id: string;
    identity: string;
    secretDigest: Buffer;
    store: JobStore | undefined;
    cwd?: string;
    restored?: AgentSessionInit['restored'];
    kind?: AgentSessionInit['kind'];
    host?: AgentSession;
    idleTimeoutMs?: number;
  }): AgentSession {
    const { identity, secretDigest, store } = init;
    const thread = sharedJobType(this.#threadType);
    const spool = this.#options.spool;
    const session = new AgentSession({
      id: init.id,
      identity,
      secretDigest,
      ...(init.restored ? { restored: init.restored } : {}),
      ...(init.kind ? { kind: init.kind } : {}),
      ...(init.host ? { host: init.host } : {}),
      queue: this.#queue,
      records: (manager, sessionId) =>
        store
          ? new SpooledRecords({ manager, store, sessionId, ...(spool ? { spool } : {}) })
          : new MemoryRecords(manager),
      saved: (changed) => {
        // A view holds nothing worth keeping: its jobs are its host's, and it ends with its link.
        if (!store || changed.state === 'Closed' || this.#closed || changed.kind === 'view') return;
        store
          .saveSession({
            sessionId: changed.id,
            identity,
            resumeSecretHash: changed.secretDigest,
            workingDirectory: changed.cwd,
            env: { ...changed.env },
            createdAt: new Date(changed.createdAtMs),
            lastSeenAt: new Date(changed.lastSeenAtMs),
            name: changed.name,
            idleTimeoutMs: changed.idleTimeoutMs,
            ...(changed.kind === 'host' ? { host: true } : {}),
          })
          .catch(() => {});
      },
      computerName: this.computerName,
      newChannel: () => new ReliableChannel(this.#options.channel),
      cwd: init.cwd ?? this.#options.defaultCwd ?? homedir(),
      idleTimeoutMs: init.idleTimeoutMs ?? this.#idleTimeoutMs,
      ...(this.#options.maxBufferedBytes === undefined
        ? store
          ? { maxBufferedBytes: SPOOLED_MAX_BUFFERED_BYTES }
          : {}
        : { maxBufferedBytes: this.#options.maxBufferedBytes }),
      jobTypes: (context) => [
        thread,
        sessionProcessJobType(this.#processType, context),
        ...this.#extraTypes.map(sharedJobType),
      ],
      onEnded: (ended) => {
        if (this.#sessions.get(ended.id) === ended) this.#sessions.delete(ended.id);
      },
    });
    session.listSessions = () => this.sessions(identity);
    session.claimSession = (sessionId) => this.#claim(identity, session.id, sessionId);
    const hosted = this.#hosted;
    if (hosted) session.hosted = (method, params) => hosted.call(identity, method, params);
    session.control = {
      info: (who, asking) => this.#agentInfo(who, asking),
      ...(this.#options.onStopRequested ? { stop: this.#options.onStopRequested } : {}),
    };
    this.#sessions.set(session.id, session);
    return session;
  }
}

/** The id of an identity's job host: the same for the same identity, in every agent. */
function hostSessionId(identity: string): string {
  return `host-${createHash('sha256').update(identity).digest('hex').slice(0, 32)}`;
}
