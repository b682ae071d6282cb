/**
 * Fan-out (Invoke-Command -ComputerName a,b,c): the same work on several targets, at most
 * `throttleLimit` at once. Synchronously, records from every target stream back tagged with their
 * computer name; as a job, a parent with one RemoteJob child per target; in disconnected sessions
 * (-InDisconnectedSession), a session per target left Disconnected with the work running in it.
 * An unreachable target only fails its own part.
 */
import { ErrorCode, RjobError, toRjobError } from '../errors.js';
import type { Job } from '../job/job.js';
import type { JobManager } from '../job/job-manager.js';
import { isTerminal } from '../job/states.js';
import type { Transport } from '../transport/transport.js';
import { RecordStream } from './record-stream.js';
import type { RemoteJobInfo } from './remote-job-manager.js';
import { describeWorkRequest, type RemoteJobDefinition, remoteJobType } from './remote-job-type.js';
import type { SessionInfo, WorkRequest } from './rpc.js';
import { openSession, Session } from './session.js';
import type { RemoteRecord, SessionOptions } from './session-types.js';
import { SessionErrorCode } from './session-errors.js';

/** Default number of targets worked on at once, as PowerShell's Invoke-Command. */
export const DEFAULT_THROTTLE_LIMIT = 32;

export interface InvokeManyOptions<Target> {
  /** How targets that are not open sessions are reached. Needed unless every target is a Session. */
  transport?: Transport<Target>;
  /** Options of the sessions opened for targets (closed again when their work ends). Default: none. */
  sessionOptions?: SessionOptions;
  /** Targets worked on at once; the rest wait. Default 32. */
  throttleLimit?: number;
  /** Run as a local parent job with one RemoteJob child per target. Default false. */
  asJob?: boolean;
  /** With `asJob`: the parent's name. Default `Job<id>`. */
  name?: string;
  /** The computer name of a target. Default `String(target)`, or the session's. */
  computerName?: (target: Target) => string;
  /**
   * Synchronous mode: called with each record; a returned promise holds that target back. With it
   * the iterable yields nothing. Default: records are queued for the iterable.
   */
  onRecord?: (record: RemoteRecord) => void | Promise<void>;
  /**
   * Synchronous mode: called once per target as soon as it is done (its work ended, or it could
   * not be reached), with its result and its place in `targets`, for progress and per-host
   * bookkeeping while the others still run. The same results arrive in `results` at the end.
   */
  onResult?: (result: FanOutResult, index: number) => void;
  /** See {@link InvokeManyDisconnectedOptions}; `false` is the same as leaving it out. */
  disconnected?: false;
  /**
   * Synchronous mode: ends the fan-out early (Ctrl-C). Targets not started yet are not reached;
   * the sessions opened for running ones are closed, which stops their work on the agents. Those
   * targets' results carry ERR_INTERRUPTED.
   */
  signal?: AbortSignal;
}

/**
 * Invoke-Command -InDisconnectedSession: each target gets a session (a new one, or the open
 * Session given as the target) with the work started in it as a job, and the session is left
 * Disconnected at once. The jobs run on; their output waits on the agents until someone comes back
 * with the session's id and resume secret. Cannot be combined with `asJob` or `onRecord`.
 */
export interface InvokeManyDisconnectedOptions<Target>
  extends Omit<InvokeManyOptions<Target>, 'asJob' | 'name' | 'onRecord' | 'onResult' | 'disconnected'> {
  disconnected: true;
  /**
   * The name of the session opened for a target (`index` is its place in `targets`). Not called
   * for targets that are open Sessions: they keep their names. Default: `sessionOptions.name`,
   * else the name the agent gives the session.
   */
  sessionName?: (target: Target, index: number) => string;
  /** Not with `disconnected`: the work's records stay on the agent. */
  asJob?: false;
  /** Not with `disconnected`: nothing streams back. */
  onRecord?: undefined;
}

/**
 * How one target fared in a fan-out in disconnected sessions. Without `error`, the work runs in a
 * Disconnected session: `connectSession(transport, target, { sessionId, resumeSecret })` takes it
 * over later (from this process or another), and `job.id` is the job to receive there.
 */
export type DisconnectedFanOutResult<Target = unknown> =
  | {
      computerName: string;
      /** The target reached (for a given Session, its `target`). */
      target: Target;
      /** The session's name, as the agent has it. */
      sessionName: string;
      /** The agent's id for the session. */
      sessionId: string;
      /** Proves the right to resume the session: keep it as private as a key. */
      resumeSecret: string;
      /** The agent's description of the session, as it stands once the job started and the session was left. */
      sessionInfo: SessionInfo;
      /** The started job's info as the agent gave it at the start. */
      job: RemoteJobInfo;
      error?: undefined;
    }
  | {
      computerName: string;
      target: Target;
      /**
       * Why this target has no session with the work in it: unreachable (ERR_CONNECT_FAILED or the
       * transport's code), or the work was refused (the agent's code). A session opened for it was
       * closed again.
       */
      error: RjobError;
    };

/** How one target fared in a synchronous fan-out. */
export interface FanOutResult {
  computerName: string;
  /** The temporary job's final info, when the work ran. */
  info?: RemoteJobInfo;
  /** Why the target could not run the work (unreachable, refused). */
  error?: RjobError;
}

/** A synchronous fan-out: iterate for the tagged records; `results` has one entry per target. */
export interface FanOutInvocation extends AsyncIterable<RemoteRecord> {
  readonly results: Promise<FanOutResult[]>;
}

export function invokeMany<Target>(
  jobManager: JobManager | undefined,
  targets: ReadonlyArray<Target | Session<Target>>,
  work: WorkRequest,
  options: InvokeManyDisconnectedOptions<Target>,
): Promise<DisconnectedFanOutResult<Target>[]>;
export function invokeMany<Target>(
  jobManager: JobManager,
  targets: ReadonlyArray<Target | Session<Target>>,
  work: WorkRequest,
  options: InvokeManyOptions<Target> & { asJob: true },
): Job;
export function invokeMany<Target>(
  jobManager: JobManager | undefined,
  targets: ReadonlyArray<Target | Session<Target>>,
  work: WorkRequest,
  options?: InvokeManyOptions<Target>,
): FanOutInvocation;
export function invokeMany<Target>(
  jobManager: JobManager | undefined,
  targets: ReadonlyArray<Target | Session<Target>>,
  work: WorkRequest,
  options: InvokeManyOptions<Target> | InvokeManyDisconnectedOptions<Target> = {},
): Job | FanOutInvocation | Promise<DisconnectedFanOutResult<Target>[]> {
  if (options.disconnected && (options.asJob || options.onRecord)) {
    throw new RjobError(
      ErrorCode.InvalidArgument,
      'invokeMany: disconnected cannot be combined with asJob or onRecord.',
    );
  }
  const throttleLimit = Math.max(1, options.throttleLimit ?? DEFAULT_THROTTLE_LIMIT);
  const nameOf = (target: Target | Session<Target>): string =>
    target instanceof Session
      ? target.computerName
      : (options.computerName?.(target) ?? options.sessionOptions?.computerName ?? String(target));
  const needsTransport = targets.some((target) => !(target instanceof Session));
  if (needsTransport && !options.transport) {
    throw toRjobError(
      new Error('invokeMany needs a transport for targets that are not open sessions.'),
      ErrorCode.InvalidArgument,
    );
  }

  if (options.disconnected) {
    return invokeDisconnected(targets, work, options, throttleLimit, nameOf);
  }
  if (options.asJob) {
    if (!jobManager) throw toRjobError(new Error('asJob needs a jobManager.'), ErrorCode.InvalidArgument);
    const type = remoteJobType();
    return jobManager.startGroup({
      ...(options.name === undefined ? {} : { name: options.name }),
      type: type.name,
      command: describeWorkRequest(work),
      throttleLimit,
      children: targets.map((target) => {
        const computerName = nameOf(target);
        const definition: RemoteJobDefinition =
          target instanceof Session
            ? { session: target, work }
            : {
                connect: {
                  transport: options.transport!,
                  target,
                  options: { ...options.sessionOptions, computerName },
                },
                work,
              };
        return { type, definition, location: computerName };
      }),
    });
  }

  const stream = new RecordStream<RemoteRecord>();
  const onRecord = options.onRecord ?? ((record: RemoteRecord) => stream.push(record));
  // A target's session is closed (a round trip to its agent) while the next target starts: its
  // result is already known. `results` waits for every close.
  const closing = new Set<Promise<void>>();
  // The sessions opened here for running targets: an abort closes them (one listener for all).
  const running = new Set<Session<Target>>();
  options.signal?.addEventListener(
    'abort',
    () => {
      for (const session of running) void session.close().catch(() => {});
    },
    { once: true },
  );
  const runOne = async (target: Target | Session<Target>): Promise<FanOutResult> => {
    const computerName = nameOf(target);
    const { signal } = options;
    const interrupted = (): FanOutResult => ({
      computerName,
      error: new RjobError(SessionErrorCode.Interrupted, 'Interrupted: the work was stopped.', {
        details: { computerName },
      }),
    });
    if (signal?.aborted) return interrupted();
    let session: Session<Target>;
    try {
      session =
        target instanceof Session
          ? target
          : await openSession(options.transport!, target, { ...options.sessionOptions, computerName });
    } catch (error) {
      const reason = toRjobError(error, SessionErrorCode.ConnectFailed);
      // PowerShell writes an unreachable computer to the error stream; so do we, tagged.
      await onRecord({
        stream: 'error',
        data: reason,
        seq: 0,
        timeMs: Date.now(),
        jobId: 0,
        location: computerName,
        computerName,
        reason: true,
      });
      return { computerName, error: reason };
    }
    // Closing the session opened here stops its work on the agent (a given session is the caller's).
    const owned = session !== target;
    if (owned) running.add(session);
    try {
      if (owned && signal?.aborted) return interrupted();
      const info = await session.invoke(work, { onRecord }).result;
      return owned && signal?.aborted && info.state !== 'Completed' ? interrupted() : { computerName, info };
    } catch (error) {
      if (owned && signal?.aborted) return interrupted();
      return { computerName, error: toRjobError(error, ErrorCode.Remote) };
    } finally {
      running.delete(session);
      if (owned) {
        // Its invoke was answered: the protocol's `close` alone ends the session on the agent.
        const closed = session.close({ wait: false }).catch(() => {});
        closing.add(closed);
        void closed.then(() => closing.delete(closed));
      }
    }
  };

  const runAndReport = async (target: Target | Session<Target>, index: number): Promise<FanOutResult> => {
    const result = await runOne(target);
    options.onResult?.(result, index);
    return result;
  };
  const all = throttled(targets, throttleLimit, runAndReport).then(async (results) => {
    await Promise.all(closing);
    stream.end();
    return results;
  });
  all.catch((error: unknown) => stream.fail(error));
  return {
    results: all,
    [Symbol.asyncIterator]: () => stream[Symbol.asyncIterator](),
  };
}

/** Runs `run` on every item, at most `limit` at once; the results are in item order. */
async function throttled<Item, Result>(
  items: ReadonlyArray<Item>,
  limit: number,
  run: (item: Item, index: number) => Promise<Result>,
): Promise<Result[]> {
  const results: Result[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      results[index] = await run(items[index]!, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

async function invokeDisconnected<Target>(
  targets: ReadonlyArray<Target | Session<Target>>,
  work: WorkRequest,
  options: InvokeManyDisconnectedOptions<Target>,
  throttleLimit: number,
  nameOf: (target: Target | Session<Target>) => string,
): Promise<DisconnectedFanOutResult<Target>[]> {
  const runOne = async (
    item: Target | Session<Target>,
    index: number,
  ): Promise<DisconnectedFanOutResult<Target>> => {
    const given = item instanceof Session ? item : undefined;
    const target = given ? given.target : (item as Target);
    let computerName = given?.computerName ?? String(target);
    let session: Session<Target> | undefined = given;
    try {
      computerName = nameOf(item);
      if (given) {
        // A request on a session that is not Opened waits for a reconnect that may never come.
        if (given.state !== 'Opened') {
          throw new RjobError(SessionErrorCode.SessionNotOpened, `Session ${given.name} is ${given.state}.`, {
            details: { computerName },
          });
        }
      } else {
        const name = options.sessionName?.(target, index) ?? options.sessionOptions?.name;
        try {
          session = await openSession(options.transport!, target, {
            ...options.sessionOptions,
            computerName,
            ...(name === undefined ? {} : { name }),
          });
        } catch (error) {
          return { computerName, target, error: toRjobError(error, SessionErrorCode.ConnectFailed) };
        }
      }
      const opened = session!;
      try {
        // Asked before the work starts: the session is left at once, and then it cannot be asked.
        // It also brings the agent's own name for the session when none was given.
        const sessionInfo = await opened.info();
        const job = await opened.invoke(work, { disconnected: true }).result;
        return {
          computerName,
          target,
          sessionName: opened.name,
          sessionId: opened.sessionId!,
          resumeSecret: opened.resumeSecret!,
          // As the agent now has it: nobody attached, the job counted.
          sessionInfo: {
            ...sessionInfo,
            state: 'Disconnected',
            availability: 'None',
            runningJobs: sessionInfo.runningJobs + (isTerminal(job.state) ? 0 : 1),
          },
          job,
        };
      } catch (error) {
        // A session opened here whose job could not start is of no use to anyone: end it. A given
        // session is the caller's.
        if (!given) await opened.close().catch(() => {});
        throw error;
      }
    } catch (error) {
      return { computerName, target, error: toRjobError(error, ErrorCode.Remote) };
    }
  };
  return throttled(targets, throttleLimit, runOne);
}
