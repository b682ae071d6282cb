/**
 * RemoteJobs run by the agent itself (`rjob invoke --as-job`): a job whose definition names a
 * target as text (an ssh_config alias, `user@host:port`, a `wss://` URL, ...) and the work to run
 * there. The agent reaches the target through a transport plugin (see {@link AgentTransport}),
 * opens a session for the job alone, mirrors the remote job with core's RemoteJob type (values
 * keep structured-clone fidelity; `stop` stops the remote work) and closes the session when the
 * job ends. No process per target: every target is a few objects in the agent.
 */
import {
  ErrorCode,
  defineJobType,
  type JobContext,
  type JobOutcome,
  type JobRun,
  type JobType,
  openSession,
  withFinish,
  RjobError,
  remoteJobType,
  type Session,
  type TargetSettings,
  type TargetTransport,
  toRjobError,
  type WorkRequest,
} from '@rjob/core';
import type { RelayRequest } from '@rjob/core/protocol';
import { type HostedSessions, relayRequest } from './hosted-sessions.js';
import { isPlainObject } from './wire.js';

/** How long closing a job's own session may take before the job ends without waiting for it. */
const CLOSE_WAIT_MS = 5_000;

/** What the client gives along with a target: how its own transports would reach it (core's TargetSettings). */
export type RemoteTargetSettings = TargetSettings;

/** A transport plugin of the agent (core's TargetTransport): reaches the targets it accepts. */
export type AgentTransport = TargetTransport;

/** `job.start` / `job.startGroup` definition of a `RemoteJob` in the agent (plain data, stored as is). */
export interface RemoteTargetDefinition {
  /** Where to run the work, as the user wrote it. */
  target: string;
  /**
   * Or run it in a session this agent holds for its clients (`rjob invoke -s NAME --as-job`): the
   * job shows Disconnected while that session is, and leaves the session open when it ends.
   */
  session?: RelayRequest;
  /** The work to start there (`job.start`'s request). */
  work?: WorkRequest;
  /** Or an existing job of the held `session` to mirror, by id or name (`session receive --out-target job`). */
  remoteJob?: number | string;
  /** The name the job's records and reasons carry. Default: the target. */
  computerName?: string;
  /** See {@link RemoteTargetSettings.connectTimeoutMs}; also the session handshake's timeout. */
  connectTimeoutMs?: number;
  /** See {@link RemoteTargetSettings}. Default: none. */
  env?: Record<string, string>;
  cwd?: string;
  /** The Command column. Default: described from `work`. */
  command?: string;
}

function checkDefinition(definition: unknown): RemoteTargetDefinition {
  const bad = (what: string): never => {
    throw new RjobError(ErrorCode.InvalidArgument, `A RemoteJob definition needs ${what}.`);
  };
  if (!isPlainObject(definition)) return bad('to be an object');
  const d = definition as Record<string, unknown>;
  if (typeof d.target !== 'string' || d.target.length === 0 || d.target.length > 4096) bad('a target (text)');
  if (d.session !== undefined) d.session = relayRequest(d.session);
  if (d.remoteJob !== undefined) {
    if (d.session === undefined) bad('a session to mirror a remote job of');
    if (typeof d.remoteJob !== 'number' && typeof d.remoteJob !== 'string')
      bad('remoteJob as an id or a name');
  } else if (!isPlainObject(d.work)) bad('work (an object)');
  if (d.computerName !== undefined && typeof d.computerName !== 'string') bad('computerName as text');
  if (
    d.connectTimeoutMs !== undefined &&
    (typeof d.connectTimeoutMs !== 'number' || !(d.connectTimeoutMs > 0))
  )
    bad('connectTimeoutMs above zero');
  if (
    d.env !== undefined &&
    (!isPlainObject(d.env) || !Object.values(d.env).every((value) => typeof value === 'string'))
  )
    bad('env mapping names to text');
  if (d.cwd !== undefined && typeof d.cwd !== 'string') bad('cwd as text');
  return d as unknown as RemoteTargetDefinition;
}

/**
 * The reason of a target's failure names it and is one line (`web1: connection refused`, an SSH
 * client's several lines joined), keeping its code and fields.
 */
function namedReason(computerName: string, error: unknown): RjobError {
  const reason = toRjobError(error, ErrorCode.JobStartFailed);
  const text = reason.message.replace(/\s*\n\s*/g, ' ').trim();
  const message = text.startsWith(`${computerName}: `) ? text : `${computerName}: ${text}`;
  if (message === reason.message) return reason;
  return new RjobError(reason.code, message, {
    cause: reason.cause,
    details: { ...reason.details, computerName },
    ...(reason.exitCode === undefined ? {} : { exitCode: reason.exitCode }),
    ...(reason.signal === undefined ? {} : { signal: reason.signal }),
    ...(reason.timedOut === undefined ? {} : { timedOut: reason.timedOut }),
  });
}

/** Closes a job's own session, waiting a bounded time for the agent to confirm. */
async function closeSession(session: Session<any>): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    session.close().catch(() => {}),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, CLOSE_WAIT_MS);
      timer.unref?.();
    }),
  ]);
  clearTimeout(timer);
}

/**
 * The `RemoteJob` type (alias `remote`) of an agent with transport plugins. Each job opens its own
 * session on its target, runs the work there, and closes the session once it ended (stopped,
 * failed or done), so nothing stays on the remote host.
 */
export function targetRemoteJobType(
  transports: readonly AgentTransport[],
  hosted?: HostedSessions,
): JobType<RemoteTargetDefinition> {
  const mirror = remoteJobType();
  return defineJobType<RemoteTargetDefinition>({
    name: 'RemoteJob',
    aliases: ['remote'],
    describe: (definition) =>
      definition?.command ?? mirror.describe({ ...(definition?.work ? { work: definition.work } : {}) }),
    async start(raw, context): Promise<JobRun> {
      const definition = checkDefinition(raw);
      const computerName = definition.computerName ?? definition.target;
      if (definition.session) return inHeldSession(definition, definition.session, computerName, context);
      const plugin = transports.find((transport) => transport.accepts(definition.target));
      if (!plugin) {
        throw new RjobError(
          ErrorCode.InvalidArgument,
          `${computerName}: no transport of this agent reaches ${definition.target}.`,
          { details: { computerName } },
        );
      }
      const settings: RemoteTargetSettings = {
        env: definition.env ?? {},
        cwd: definition.cwd,
        connectTimeoutMs: definition.connectTimeoutMs,
      };
      let session: Session<any> | undefined;
      const stopped = (): JobRun => {
        context.finish({ state: 'Stopped' });
        return { stop() {} };
      };
      try {
        const resolved = await plugin.resolve(definition.target, settings);
        if (context.signal.aborted) return stopped();
        // Reaching the host can take long (a timeout, a slow login): a stop does not wait for it.
        const opening = openSession(resolved.transport, resolved.target, {
          computerName,
          ...(definition.connectTimeoutMs === undefined
            ? {}
            : { handshakeTimeoutMs: definition.connectTimeoutMs }),
        });
        const aborted = new Promise<undefined>((resolve) => {
          if (context.signal.aborted) resolve(undefined);
          context.signal.addEventListener('abort', () => resolve(undefined), { once: true });
        });
        session = await Promise.race([opening, aborted]);
        if (!session) {
          void opening.then(closeSession, () => {});
          return stopped();
        }
      } catch (error) {
        const other =
          definition.work && plugin.fallback
            ? await plugin
                .fallback(definition.target, settings, definition.work, error)
                .catch(() => undefined)
            : undefined;
        if (!other) throw namedReason(computerName, error);
        // No agent there, but the work can run another way (plain exec): say so once, then run it.
        context.emit('warning', other.notice);
        return other.type.start(other.definition, context);
      }
      const own = session;
      // The session closes before the job says it ended: once `rjob stop` or `wait` returns,
      // the remote host holds nothing of it any more.
      let finished = false;
      const finish = (outcome: JobOutcome): void => {
        if (finished) return;
        finished = true;
        void closeSession(own).then(() =>
          context.finish(
            outcome.state === 'Failed'
              ? { state: 'Failed', reason: namedReason(computerName, outcome.reason) }
              : outcome,
          ),
        );
      };
      const inner = withFinish(context, finish);
      try {
        return await mirror.start({ session: own, work: definition.work! }, inner);
      } catch (error) {
        await closeSession(own);
        throw namedReason(computerName, error);
      }
    },
  });

  /** A child in a held session: the session stays open when it ends, and its reasons name the target. */
  async function inHeldSession(
    definition: RemoteTargetDefinition,
    request: RelayRequest,
    computerName: string,
    context: JobContext,
  ): Promise<JobRun> {
    if (!hosted) {
      throw new RjobError(ErrorCode.InvalidArgument, `${computerName}: this agent holds no sessions.`);
    }
    let session: Session<any>;
    try {
      session = await hosted.forJob(request);
    } catch (error) {
      throw namedReason(computerName, error);
    }
    // The remote job is started here (not by the mirror) so the agent knows which of the session's
    // jobs a local job mirrors: `session receive --out-target job` leaves those alone.
    let remoteJob: number | string;
    try {
      remoteJob =
        definition.remoteJob ??
        (
          await (context.signal.aborted
            ? Promise.reject(stoppedError())
            : session.jobs.start(definition.work!))
        ).id;
    } catch (error) {
      throw namedReason(computerName, error);
    }
    if (context.signal.aborted && definition.remoteJob === undefined) {
      // Stopped while the remote job was starting: it is stopped and removed, nothing left running.
      await session.jobs.stop(remoteJob).catch(() => {});
      await session.jobs.remove(remoteJob, { force: true }).catch(() => {});
      context.finish({ state: 'Stopped' });
      return { stop() {} };
    }
    const release = hosted.mirroring(request.sessionId, remoteJob);
    const inner = withFinish(context, (outcome) => {
      release();
      context.finish(
        outcome.state === 'Failed'
          ? { state: 'Failed', reason: namedReason(computerName, outcome.reason) }
          : outcome,
      );
    });
    try {
      return await mirror.start(
        { session, remoteJob, removeWhenDone: definition.remoteJob === undefined },
        inner,
      );
    } catch (error) {
      release();
      throw namedReason(computerName, error);
    }
  }
}

function stoppedError(): RjobError {
  return new RjobError(ErrorCode.JobStartFailed, 'Stopped before it started.');
}
