/**
 * Sessions the agent holds for its clients (`rjob session new`), as a PowerShell host holds its
 * PSSessions: the agent opens each through its transport plugins and keeps the connection, so a
 * client's `-s NAME` verb is a relay over that open connection (relay-session.ts) instead of a new
 * SSH login, and local RemoteJobs can run children in it (`invoke -s NAME --as-job`) that show
 * Disconnected while it is. The client keeps the credentials (its session table); the agent
 * holds connections, and takes up a session again from those credentials after a restart.
 */
import {
  ErrorCode,
  type HostedSessionInfo,
  openSession,
  connectSession,
  ProtocolErrorCode,
  RjobError,
  type Session,
  type SessionInfo,
  serializeError,
} from '@rjob/core';
import type { HostedOpenRequest, RelayRequest } from '@rjob/core/protocol';
import type { AgentTransport, RemoteTargetSettings } from './remote-jobs.js';
import { invalidParams, isPlainObject, objectParams, optionalString, requiredString } from './wire.js';

/** The identity of a session taken up for a RemoteJob before any client named it. */
const JOB_ONLY = '';

interface Held {
  identity: string;
  request: RelayRequest;
  session: Session<any>;
  connecting?: Promise<void> | undefined;
  /** The remote agent's computer name, as its session info said. */
  remoteHost?: string;
}

/** The held sessions of one agent. */
export class HostedSessions {
  readonly #transports: readonly AgentTransport[];
  /** By session id. */
  readonly #held = new Map<string, Held>();
  /** Holds under way, so that clients asking at once share one connection. */
  readonly #holding = new Map<string, Promise<Held>>();
  /** The jobs of each session that local RemoteJobs mirror, by session id. */
  readonly #mirrored = new Map<string, Map<number | string, number>>();
  #closed = false;

  constructor(transports: readonly AgentTransport[]) {
    this.#transports = transports;
  }

  /** `hosted.*` requests of a session of `identity`. */
  call(identity: string, method: string, params: unknown): Promise<unknown> {
    switch (method) {
      case 'hosted.open':
        return this.open(identity, openRequest(params));
      case 'hosted.connect':
        return this.hold(identity, relayRequest(params)).then((session) => session.info());
      case 'hosted.disconnect': {
        const sessionId = requiredString(objectParams(params, method), 'sessionId');
        return this.disconnect(identity, sessionId);
      }
      case 'hosted.close':
        return this.close(identity, relayRequest(params)).then(() => undefined);
      case 'hosted.list':
        return Promise.resolve(this.list(identity));
      default:
        return Promise.reject(
          new RjobError(ProtocolErrorCode.UnknownMethod, `Unknown method "${method.slice(0, 256)}".`),
        );
    }
  }

  /** Opens a session on `request.target` and holds it. */
  async open(
    identity: string,
    request: HostedOpenRequest,
  ): Promise<{ sessionId: string; resumeSecret: string; info: SessionInfo }> {
    const { plugin, settings } = this.#reach(request.target, request);
    const resolved = await plugin.resolve(request.target, settings);
    const session = await openSession(resolved.transport, resolved.target, {
      name: request.name,
      computerName: request.target,
      ...(request.connectTimeoutMs === undefined ? {} : { handshakeTimeoutMs: request.connectTimeoutMs }),
    });
    const info = await session.request('session.configure', { name: request.name });
    const held: Held = {
      identity,
      remoteHost: info.computerName,
      request: {
        target: request.target,
        sessionId: session.sessionId!,
        resumeSecret: session.resumeSecret!,
        name: request.name,
        ...settingsOf(request),
      },
      session,
    };
    this.#keep(held);
    return { sessionId: session.sessionId!, resumeSecret: session.resumeSecret!, info };
  }

  /**
   * The held session `request` names, connected: held already (connected again when it was
   * Disconnected), or taken up from the credentials (a session this agent did not open, or one
   * from before a restart).
   */
  async hold(identity: string, request: RelayRequest): Promise<Session<any>> {
    if (this.#closed) throw new RjobError(ProtocolErrorCode.ChannelClosed, 'The agent is shutting down.');
    const held = this.#held.get(request.sessionId);
    if (held?.identity === JOB_ONLY && held.request.resumeSecret === request.resumeSecret)
      held.identity = identity;
    if (held && held.identity === identity && held.request.resumeSecret === request.resumeSecret) {
      const { session } = held;
      if (session.state === 'Opened') return session;
      if (session.state === 'Disconnected') {
        // Clients asking at once share one attempt.
        held.connecting ??= session.connect().finally(() => {
          held.connecting = undefined;
        });
        await held.connecting;
        return session;
      }
      // Broken or Closed: taken up again below, as a session this agent never held.
      this.#held.delete(request.sessionId);
    } else if (held) {
      // Another identity's, or a wrong secret: as unknown, so the answer tells nothing.
      throw new RjobError(ProtocolErrorCode.SessionNotFound, 'No such session.');
    }
    let holding = this.#holding.get(request.sessionId);
    if (!holding) {
      holding = this.#takeUp(identity, request).finally(() => this.#holding.delete(request.sessionId));
      this.#holding.set(request.sessionId, holding);
    }
    const taken = await holding;
    if (taken.identity === JOB_ONLY && taken.request.resumeSecret === request.resumeSecret)
      taken.identity = identity;
    if (taken.identity !== identity || taken.request.resumeSecret !== request.resumeSecret) {
      throw new RjobError(ProtocolErrorCode.SessionNotFound, 'No such session.');
    }
    return taken.session;
  }

  async #takeUp(identity: string, request: RelayRequest): Promise<Held> {
    const { plugin, settings } = this.#reach(request.target, request);
    const resolved = await plugin.resolve(request.target, settings);
    const session = await connectSession(resolved.transport, resolved.target, {
      sessionId: request.sessionId,
      resumeSecret: request.resumeSecret,
      ...(request.name === undefined ? {} : { name: request.name }),
      computerName: request.target,
      ...(request.connectTimeoutMs === undefined ? {} : { handshakeTimeoutMs: request.connectTimeoutMs }),
    });
    const held: Held = { identity, request, session };
    held.remoteHost = (await session.info().catch(() => undefined))?.computerName;
    this.#keep(held);
    return held;
  }

  /** Disconnect-PSSession: the remote session keeps its jobs; null when this agent does not hold it. */
  async disconnect(identity: string, sessionId: string): Promise<HostedSessionInfo | null> {
    const held = this.#held.get(sessionId);
    if (!held || held.identity !== identity) return null;
    await held.session.disconnect();
    return describe(held);
  }

  /** Remove-PSSession: the remote session and its jobs end; the agent lets it go. */
  async close(identity: string, request: RelayRequest): Promise<void> {
    const session = await this.hold(identity, request);
    try {
      await session.close();
    } finally {
      this.#held.delete(request.sessionId);
    }
  }

  list(identity: string): HostedSessionInfo[] {
    return [...this.#held.values()]
      .filter((held) => held.identity === identity)
      .map((held) => {
        const mirrored = [...(this.#mirrored.get(held.request.sessionId)?.keys() ?? [])];
        return { ...describe(held), ...(mirrored.length > 0 ? { mirroredJobs: mirrored } : {}) };
      });
  }

  /**
   * A held session for a RemoteJob of this agent (its definition names it as a client would). Taken
   * up for the job alone (no identity yet) when not held; the first client with its secret adopts it.
   */
  forJob(request: RelayRequest): Promise<Session<any>> {
    return this.hold(this.#held.get(request.sessionId)?.identity ?? JOB_ONLY, request);
  }

  /** A local job mirrors `remoteJob` of the session until the returned function is called. */
  mirroring(sessionId: string, remoteJob: number | string): () => void {
    let jobs = this.#mirrored.get(sessionId);
    if (!jobs) this.#mirrored.set(sessionId, (jobs = new Map()));
    jobs.set(remoteJob, (jobs.get(remoteJob) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const count = (jobs.get(remoteJob) ?? 1) - 1;
      if (count > 0) jobs.set(remoteJob, count);
      else jobs.delete(remoteJob);
      if (jobs.size === 0 && this.#mirrored.get(sessionId) === jobs) this.#mirrored.delete(sessionId);
    };
  }

  /** The agent stops: every held session is left Disconnected, its jobs going on remotely. */
  async dispose(): Promise<void> {
    this.#closed = true;
    await Promise.allSettled([...this.#held.values()].map((held) => held.session.disconnect()));
    this.#held.clear();
  }

  #keep(held: Held): void {
    const previous = this.#held.get(held.request.sessionId);
    this.#held.set(held.request.sessionId, held);
    if (previous && previous.session !== held.session) void previous.session.disconnect().catch(() => {});
  }

  #reach(
    target: string,
    request: { env?: Record<string, string>; cwd?: string; connectTimeoutMs?: number },
  ): { plugin: AgentTransport; settings: RemoteTargetSettings } {
    const plugin = this.#transports.find((transport) => transport.accepts(target));
    if (!plugin) {
      throw new RjobError(ErrorCode.InvalidArgument, `No transport of this agent reaches ${target}.`);
    }
    return {
      plugin,
      settings: { env: request.env ?? {}, cwd: request.cwd, connectTimeoutMs: request.connectTimeoutMs },
    };
  }
}

function settingsOf(request: {
  env?: Record<string, string>;
  cwd?: string;
  connectTimeoutMs?: number;
}): Pick<RelayRequest, 'env' | 'cwd' | 'connectTimeoutMs'> {
  return {
    ...(request.env === undefined ? {} : { env: request.env }),
    ...(request.cwd === undefined ? {} : { cwd: request.cwd }),
    ...(request.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: request.connectTimeoutMs }),
  };
}

function describe(held: Held): HostedSessionInfo {
  const { session, request } = held;
  return {
    sessionId: request.sessionId,
    name: request.name ?? session.name,
    target: request.target,
    state: session.state,
    ...(held.remoteHost === undefined ? {} : { remoteHost: held.remoteHost }),
    ...(session.reason ? { reason: serializeError(session.reason) } : {}),
  };
}

function settingsParams(p: Record<string, unknown>): Pick<RelayRequest, 'env' | 'cwd' | 'connectTimeoutMs'> {
  const cwd = optionalString(p, 'cwd', 4096);
  const timeout = p.connectTimeoutMs;
  if (timeout !== undefined && !(typeof timeout === 'number' && timeout > 0)) {
    throw invalidParams('connectTimeoutMs must be a number above zero.');
  }
  const env = p.env;
  if (env !== undefined && (!isPlainObject(env) || !Object.values(env).every((v) => typeof v === 'string'))) {
    throw invalidParams('env must map names to text.');
  }
  return settingsOf({
    ...(env === undefined ? {} : { env: env as Record<string, string> }),
    ...(cwd === undefined ? {} : { cwd }),
    ...(timeout === undefined ? {} : { connectTimeoutMs: timeout as number }),
  });
}

function openRequest(params: unknown): HostedOpenRequest {
  const p = objectParams(params, 'hosted.open');
  return {
    target: requiredString(p, 'target', 4096),
    name: requiredString(p, 'name'),
    ...settingsParams(p),
  };
}

/** A RelayRequest from params (`hosted.connect`, `hosted.close`) or a job's definition. */
export function relayRequest(params: unknown): RelayRequest {
  const p = objectParams(params, 'hosted session');
  const name = optionalString(p, 'name');
  return {
    target: requiredString(p, 'target', 4096),
    sessionId: requiredString(p, 'sessionId'),
    resumeSecret: requiredString(p, 'resumeSecret'),
    ...(name === undefined ? {} : { name }),
    ...settingsParams(p),
  };
}
