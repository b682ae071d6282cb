/**
 * RemoteJob: a local job that mirrors work running in a session on an agent. Records arrive as
 * `job.packed` events (exactly once, in order, across reconnects: the session's reliable channel
 * sees to that), `job.end` ends the local job with the remote outcome, and while the session is
 * Disconnected the local job shows Disconnected. Pausing stops consuming events, so the channel
 * stops granting credit and the agent holds the output.
 */
import { ErrorCode, RjobError } from '../errors.js';
import { defineJobType, type JobContext, type JobOutcome, type JobType } from '../job/job-type.js';
import { describeWork } from '../runtime/host.js';
import type { Transport } from '../transport/transport.js';
import type { RemoteJobInfo } from './remote-job-manager.js';
import { SessionErrorCode } from './session-errors.js';
import type { WireSelector, WorkRequest } from './rpc.js';
import { openSession, type Session } from './session.js';
import type { SessionOptions, Subscription } from './session-types.js';

/** Where a RemoteJob runs: an open session, or a target to open one on for the job alone. */
export interface RemoteJobDefinition {
  /** An open session to run in. The job leaves it open when it ends. */
  session?: Session<any>;
  /**
   * Or a target to reach: a session is opened for the job and closed when it ends (how a fan-out
   * child reaches its host). A failure to connect fails the job with the connect error's code.
   */
  connect?: { transport: Transport<any>; target: unknown; options?: SessionOptions };
  /** Work to start in the agent's job table (`job.start`), then mirror. */
  work?: WorkRequest;
  /** Or an existing remote job to mirror, by id or name (Receive-PSSession -OutTarget Job). */
  remoteJob?: WireSelector;
  /** Leave the records on the agent as they are mirrored. Default false (they move here). */
  keep?: boolean;
  /**
   * Remove the remote job once it ended and everything arrived. Default true for `work` (the
   * remote job only existed for this local one), false for `remoteJob`.
   */
  removeWhenDone?: boolean;
  /** The Command column. Default: described from `work`. */
  command?: string;
}

/** A short text for the Command column from a work request's definition. */
export function describeWorkRequest(work: WorkRequest | undefined): string {
  const definition = work?.definition as Record<string, unknown> | string | undefined;
  if (typeof definition === 'string') return definition;
  if (!definition || typeof definition !== 'object') return '';
  if (typeof definition.command === 'string') return definition.command;
  if (typeof definition.file === 'string') {
    const args = Array.isArray(definition.args) ? definition.args.map(String) : [];
    return [definition.file, ...args].join(' ');
  }
  // JS work is described as a local thread or process job describes it.
  if (typeof definition.eval === 'string') return describeWork({ eval: definition.eval });
  if (definition.module !== undefined)
    return describeWork({
      module: String(definition.module),
      ...(typeof definition.export === 'string' ? { export: definition.export } : {}),
    });
  if (typeof definition.fn === 'function' || typeof definition.fn === 'string')
    return describeWork({ fn: String(definition.fn) });
  return '';
}

/** The outcome of a remote job as the local job reports it. */
function outcomeOf(jobs: RemoteJobInfo[], computerName: string): JobOutcome {
  const failed = jobs.find((job) => job.state === 'Failed');
  if (failed) {
    return {
      state: 'Failed',
      reason:
        failed.reason ??
        new RjobError(ErrorCode.RemoteJobFailed, `Remote job ${failed.id} failed on ${computerName}.`),
    };
  }
  if (jobs.some((job) => job.state === 'Stopped')) return { state: 'Stopped' };
  return { state: 'Completed' };
}

/** Declares the RemoteJob type. Nothing to register: pass it to `JobManager.start` or `startGroup`. */
export function remoteJobType(): JobType<RemoteJobDefinition> {
  return defineJobType<RemoteJobDefinition>({
    name: 'RemoteJob',
    aliases: ['remote'],
    describe: (definition) => definition.command ?? describeWorkRequest(definition.work),
    async start(definition, context) {
      return startRemoteJob(definition, context);
    },
  });
}

async function startRemoteJob(definition: RemoteJobDefinition, context: JobContext) {
  if ((definition.work !== undefined) === (definition.remoteJob !== undefined)) {
    throw new RjobError(ErrorCode.InvalidArgument, 'A RemoteJob needs exactly one of work and remoteJob.');
  }
  let session = definition.session;
  const owned = !session;
  if (!session) {
    if (!definition.connect) {
      throw new RjobError(
        ErrorCode.InvalidArgument,
        'A RemoteJob needs a session or a target to connect to.',
      );
    }
    session = await openSession(
      definition.connect.transport,
      definition.connect.target,
      definition.connect.options,
    );
  }
  const s = session;
  const starting = startingStop(s, context.signal);
  let remoteId: WireSelector;
  try {
    remoteId = definition.work
      ? (await starting.race(s.jobs.start(definition.work))).id
      : definition.remoteJob!;
  } catch (error) {
    starting.done();
    if (owned) void s.close().catch(() => {});
    throw error;
  }
  const removeWhenDone = definition.removeWhenDone ?? definition.work !== undefined;

  let ended = false;
  let paused = false;
  let resumeWaiters: Array<() => void> = [];
  const wake = (): void => {
    const waiters = resumeWaiters;
    resumeWaiters = [];
    for (const resolve of waiters) resolve();
  };
  const offState = s.onStateChange(({ state }) => {
    if (state === 'Disconnected') context.disconnected?.();
    else if (state === 'Opened') context.reconnected?.();
  });
  const end = (outcome: JobOutcome): void => {
    if (ended) return;
    ended = true;
    offState();
    paused = false;
    wake();
    context.finish(outcome);
    if (owned) void s.close().catch(() => {});
  };

  const subscription: Subscription = s.subscribe(
    remoteId,
    {
      onRecord(record) {
        if (ended) return;
        context.emit(record.stream, record.data);
        // Holding the channel's consumer is what stops credit, so the agent keeps the rest.
        if (paused) return new Promise<void>((resolve) => resumeWaiters.push(resolve));
      },
      onEnd(jobs) {
        if (removeWhenDone && s.state === 'Opened') void s.jobs.remove(remoteId).catch(() => {});
        end(outcomeOf(jobs, s.computerName));
      },
      onSessionEnd(reason) {
        end({ state: 'Failed', reason });
      },
    },
    definition.keep === undefined ? {} : { keep: definition.keep },
  );
  try {
    await starting.race(subscription.jobs);
  } catch (error) {
    void subscription.cancel().catch(() => {});
    offState();
    ended = true;
    if (owned) void s.close().catch(() => {});
    throw error;
  }
  starting.done();
  context.running();
  if (s.state === 'Disconnected') context.disconnected?.();

  return {
    async stop(): Promise<void> {
      if (ended) return;
      if (s.state === 'Closed' || s.state === 'Broken') {
        end({ state: 'Stopped' });
        return;
      }
      if (s.state !== 'Opened') {
        // A Disconnected session is connected once for the stop (bounded by the transport's
        // connect and the handshake timeouts). When that fails the local job ends all the same,
        // Failed with a coded reason: the remote work could not be reached to be stopped.
        try {
          await s.connect();
        } catch (error) {
          end({
            state: 'Failed',
            reason: new RjobError(
              SessionErrorCode.SessionDisconnected,
              `Not stopped remotely: session ${s.name} on ${s.computerName} could not be reached, so its job ${String(remoteId)} may still run there.`,
              { cause: error, details: { computerName: s.computerName, remoteJob: remoteId } },
            ),
          });
          return;
        }
      }
      try {
        // The agent answers with job.end (Stopped) on the subscription, which ends the local job.
        await s.jobs.stop(remoteId);
      } catch {
        end({ state: 'Stopped' });
      }
    },
    pause(): void {
      paused = true;
    },
    resume(): void {
      paused = false;
      wake();
    },
  };
}

/**
 * A stop asked for while the job is still starting on a Disconnected session: the start's requests
 * wait for a connect that may never come, so the session is connected once (bounded by the
 * transport's connect and the handshake timeouts). When that fails the start fails with a coded
 * reason (ERR_SESSION_DISCONNECTED) instead of waiting.
 */
function startingStop(session: Session<any>, signal: AbortSignal) {
  let fail: ((error: RjobError) => void) | undefined;
  const failed = new Promise<never>((_, reject) => {
    fail = reject;
  });
  failed.catch(() => {});
  const onAbort = (): void => {
    if (session.state !== 'Disconnected') return;
    session
      .connect()
      .catch((error: unknown) =>
        fail?.(
          new RjobError(
            SessionErrorCode.SessionDisconnected,
            `Stopped while starting: session ${session.name} on ${session.computerName} could not be reached.`,
            { cause: error, details: { computerName: session.computerName } },
          ),
        ),
      );
  };
  if (signal.aborted) onAbort();
  else signal.addEventListener('abort', onAbort, { once: true });
  return {
    race<T>(promise: Promise<T>): Promise<T> {
      return Promise.race([promise, failed]);
    },
    done(): void {
      signal.removeEventListener('abort', onAbort);
    },
  };
}
