/**
 * Fan-out (Invoke-Command -ComputerName a,b,c): the same work on several targets, at most
 * `throttleLimit` at once. Synchronously, records from every target stream back tagged with their
 * computer name; as a job, a parent with one RemoteJob child per target. An unreachable target
 * only fails its own part.
 */
import type { RjobError } from '../errors.js';
import { toRjobError } from '../errors.js';
import type { Job } from '../job/job.js';
import type { JobManager } from '../job/job-manager.js';
import type { Transport } from '../transport/transport.js';
import { RecordStream } from './record-stream.js';
import type { RemoteJobInfo } from './remote-job-manager.js';
import { describeWorkRequest, type RemoteJobDefinition, remoteJobType } from './remote-job-type.js';
import type { WorkRequest } from './rpc.js';
import { openSession, type RemoteRecord, Session, type SessionOptions } from './session.js';
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
}

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
  options: InvokeManyOptions<Target> = {},
): Job | FanOutInvocation {
  const throttleLimit = Math.max(1, options.throttleLimit ?? DEFAULT_THROTTLE_LIMIT);
  const nameOf = (target: Target | Session<Target>): string =>
    target instanceof Session
      ? target.computerName
      : (options.computerName?.(target) ?? options.sessionOptions?.computerName ?? String(target));
  const needsTransport = targets.some((target) => !(target instanceof Session));
  if (needsTransport && !options.transport) {
    throw toRjobError(
      new Error('invokeMany needs a transport for targets that are not open sessions.'),
      'ERR_INVALID_ARGUMENT',
    );
  }

  if (options.asJob) {
    if (!jobManager) throw toRjobError(new Error('asJob needs a jobManager.'), 'ERR_INVALID_ARGUMENT');
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
  const runOne = async (target: Target | Session<Target>): Promise<FanOutResult> => {
    const computerName = nameOf(target);
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
    try {
      const info = await session.invoke(work, { onRecord }).result;
      return { computerName, info };
    } catch (error) {
      return { computerName, error: toRjobError(error, 'ERR_REMOTE') };
    } finally {
      if (session !== target) await session.close().catch(() => {});
    }
  };

  const results: FanOutResult[] = new Array(targets.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < targets.length) {
      const index = next++;
      results[index] = await runOne(targets[index]!);
    }
  };
  const all = Promise.all(Array.from({ length: Math.min(throttleLimit, targets.length) }, worker)).then(
    () => {
      stream.end();
      return results;
    },
  );
  all.catch((error: unknown) => stream.fail(error));
  return {
    results: all,
    [Symbol.asyncIterator]: () => stream[Symbol.asyncIterator](),
  };
}
