/**
 * One CLI invocation's view of the world: state paths, the session store, target resolution, and
 * the sessions it attached to (left Disconnected again when the command ends, so their jobs go on).
 */
import { openSession, RjobError, type Session } from '@rjob/core';
import type { RelayRequest } from '@rjob/core/protocol';
import { remoteSettings } from './agent-transports.js';
import { CliErrorCode } from './error-codes.js';
import { CliError, type CliIo, ExitCode } from './io.js';
import { SessionStore, type StatePaths, type StoredSession, statePaths } from './state.js';
import { TargetResolver } from './targets.js';
import { ProtocolErrorCode } from '@rjob/core';

/** Name of the session in the local agent through which a command works on the local jobs. */
export const LOCAL_SESSION_NAME = 'local';

/** The agent no longer knows these credentials (wiped state, expired session): open a new one. */
const STALE_CREDENTIAL_CODES = new Set<string>([
  ProtocolErrorCode.SessionNotFound,
  ProtocolErrorCode.Unauthorized,
  ProtocolErrorCode.ResumeFailed,
]);

export class CliContext {
  readonly io: CliIo;
  readonly paths: StatePaths;
  readonly store: SessionStore;
  readonly targets: TargetResolver;
  readonly #attached: Session<unknown>[] = [];
  /** Sessions of this command alone (on the local job host): closed, not disconnected, at the end. */
  readonly #own = new Set<Session<unknown>>();

  constructor(io: CliIo, stateDirFlag?: string) {
    this.io = io;
    this.paths = statePaths(io, stateDirFlag);
    this.store = new SessionStore(this.paths.stateDir);
    this.targets = new TargetResolver(io, this.paths);
  }

  /**
   * A session of this command's own on the local agent's job host: the user's local jobs, which
   * any number of commands work on at once (none takes another's session over). Closed when the
   * command ends; the jobs stay.
   */
  async localSession(): Promise<Session<unknown>> {
    const { transport, target } = await this.targets.resolve('localhost');
    const open = () =>
      openSession(transport, target, {
        name: LOCAL_SESSION_NAME,
        computerName: 'localhost',
        autoReconnect: false,
        host: true,
      });
    let session = await open();
    if (!(await this.#sameVersion(session))) {
      // An agent another rjob version started (an upgrade while it ran). Idle, it is restarted at
      // once, its finished jobs restored by the new one; busy, it goes on, and the user is told.
      const { idleAgent, restartOutdatedAgent } = await import('./local-agent.js');
      if (await idleAgent(session)) {
        await session.close({ wait: false }).catch(() => {});
        await restartOutdatedAgent(this.paths, this.io, session.agentSoftware);
        session = await open();
      } else {
        this.io.stderr.write(
          `rjob: the local agent runs ${session.agentSoftware ?? 'an older rjob'}, this is ${await (await import('./version.js')).agentSoftware()}; it is restarted once no job runs (rjob agent stop ends it now) (${CliErrorCode.AgentVersion})\n`,
        );
      }
    }
    this.#attached.push(session);
    this.#own.add(session);
    return session;
  }

  async #sameVersion(session: Session<unknown>): Promise<boolean> {
    const { agentSoftware } = await import('./version.js');
    return session.agentSoftware === (await agentSoftware());
  }

  async storedSession(name: string): Promise<StoredSession> {
    const stored = await this.store.find(name);
    if (!stored)
      throw new CliError(ExitCode.NotFound, CliErrorCode.UnknownSession, `no session named ${name}`);
    return stored;
  }

  /**
   * A session `rjob session new` made, reached through the local agent that holds it: a relay over
   * the agent's open connection (no new login), for this command alone. The agent connects the
   * session first when it does not hold it (after a restart, or made by `invoke --disconnected`).
   */
  async namedSession(name: string): Promise<Session<unknown>> {
    const stored = await this.storedSession(name);
    const { transport, target } = await this.targets.resolve('localhost');
    try {
      const session = await openSession(transport, target, {
        name: stored.name,
        computerName: stored.target,
        autoReconnect: false,
        relay: this.relayRequest(stored),
      });
      this.#attached.push(session);
      this.#own.add(session);
      return session;
    } catch (error) {
      throw this.staleSession(stored, error);
    }
  }

  /** What the local agent needs to hold `stored`: its credentials and how this client reaches hosts. */
  relayRequest(stored: StoredSession): RelayRequest {
    const { env, cwd } = remoteSettings(this.io);
    return {
      target: stored.target,
      sessionId: stored.sessionId,
      resumeSecret: stored.resumeSecret,
      name: stored.name,
      env,
      cwd,
      ...(this.targets.connectTimeoutMs === undefined
        ? {}
        : { connectTimeoutMs: this.targets.connectTimeoutMs }),
    };
  }

  /** `error` as the user should see it: a session its agent no longer knows says how to forget it. */
  staleSession(stored: StoredSession, error: unknown): unknown {
    if (RjobError.is(error) && STALE_CREDENTIAL_CODES.has(error.code)) {
      return new CliError(
        ExitCode.NotFound,
        ProtocolErrorCode.SessionNotFound,
        `session ${stored.name} no longer exists on ${stored.target} (remove it with: rjob session remove ${stored.name})`,
      );
    }
    return error;
  }

  /** `-s NAME` when given, else the local jobs' session. */
  async jobSession(sessionName: string | undefined): Promise<Session<unknown>> {
    if (sessionName === undefined && this.io.session) return this.io.session;
    return sessionName === undefined ? this.localSession() : this.namedSession(sessionName);
  }

  /** Forgets a session: a later `dispose` must not disconnect it (it was closed). */
  release(session: Session<unknown>): void {
    const at = this.#attached.indexOf(session);
    if (at >= 0) this.#attached.splice(at, 1);
  }

  /**
   * Leaves every attached session Disconnected (its jobs keep running in the agent), and closes
   * the command's own sessions on the job host (the local jobs stay).
   */
  async dispose(): Promise<void> {
    const sessions = this.#attached.splice(0);
    await Promise.allSettled(
      sessions.map((session) =>
        // Our own host sessions: the command is done with every request, no answer is needed to
        // end them (the jobs are the host's), so no round trip before the command exits.
        this.#own.has(session) ? session.close({ wait: false }) : session.disconnect(),
      ),
    );
  }
}
