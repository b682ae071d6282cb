/**
 * The job verbs executed inside a session (`Invoke-Command -Session $s { Start-Job … }`): the jobs
 * and their results live in the agent; this proxy only calls `job.*` on the session.
 */
import { decodeRecordRuns } from '../codec/record-entries.js';
import { deserializeError, ErrorCode, type RjobError, RjobError as RjobErrorClass } from '../errors.js';
import type { GetFilter } from '../job/job-manager-options.js';
import type { JobRecord } from '../job/records.js';
import type { GroupRequest, JobInfo, ReceiveToFileResult, WireSelector, WorkRequest } from './rpc.js';
import { RecordStream } from './record-stream.js';
import type { Session } from './session.js';
import type { RemoteRecord, Subscription } from './session-types.js';

/** A remote job as the client shows it: the reason revived, tagged with its computer. */
export type RemoteJobInfo = Omit<JobInfo, 'reason'> & {
  reason?: RjobError;
  /** The computer the job runs on (its `location` is relative to the agent: `localhost`). */
  computerName: string;
};

/** Revives a wire JobInfo: the reason becomes an RjobError again. */
export function reviveJobInfo(info: JobInfo, computerName: string): RemoteJobInfo {
  const { reason, ...rest } = info;
  const out: RemoteJobInfo = { ...rest, computerName };
  if (reason) {
    const revived = deserializeError(reason);
    out.reason = RjobErrorClass.is(revived)
      ? revived
      : new RjobErrorClass(ErrorCode.Remote, revived.message, { cause: revived });
  }
  return out;
}

export interface RemoteStartOptions {
  name?: string;
  /** `process` (default on the agent) or `thread`, or another type the agent registered. */
  type?: string;
}

export class RemoteJobManager {
  readonly #session: Session<unknown>;

  constructor(session: Session<any>) {
    this.#session = session;
  }

  /** Start-Job inside the session; the job and its results stay on the agent. */
  async start(work: WorkRequest | unknown, options: RemoteStartOptions = {}): Promise<RemoteJobInfo> {
    const request = isWorkRequest(work) ? { ...work } : { definition: work };
    if (options.name !== undefined) request.name = options.name;
    if (options.type !== undefined) request.type = options.type;
    return this.#revive(await this.#session.request('job.start', request));
  }

  /**
   * A parent job with one child per entry, inside the session (a fan-out that outlives this
   * client). Receiving the parent gives its children's records, each with its child's location.
   */
  async startGroup(request: GroupRequest): Promise<RemoteJobInfo> {
    return this.#revive(await this.#session.request('job.startGroup', request));
  }

  async get(filter: GetFilter = {}): Promise<RemoteJobInfo[]> {
    return (await this.#session.request('job.get', filter)).map((info) => this.#revive(info));
  }

  /**
   * Receive-Job: returns (and unless `keep` consumes) what the jobs hold; a Failed job's reason
   * last. The records stream in bounded batches, so any number arrives; they are consumed once
   * all of them are here.
   */
  async receive(selector: WireSelector, options: { keep?: boolean } = {}): Promise<RemoteRecord[]> {
    const out: RemoteRecord[] = [];
    const subscription = await new Promise<Subscription>((resolveEnd, reject) => {
      const sub = this.#session.subscribe(
        selector,
        {
          onRecord: (record) => void out.push(this.#tag(record)),
          onEnd: () => resolveEnd(sub),
          onSessionEnd: reject,
        },
        { follow: false, ack: 'manual', ...(options.keep ? { keep: true } : {}) },
      );
      sub.jobs.catch(reject);
    });
    subscription.ack(out);
    await subscription.flush();
    return out;
  }

  /**
   * Receive-Job as a stream: each record is consumed on the agent once the iteration took it, so
   * a loop that stops early (`break`, an exception) leaves every later record there. With `wait`,
   * it goes on until the jobs finished (Receive-Job -Wait); otherwise it ends with what they hold.
   */
  receiveStream(
    selector: WireSelector,
    options: { keep?: boolean; wait?: boolean; highWaterMark?: number } = {},
  ): AsyncIterable<RemoteRecord> {
    return {
      [Symbol.asyncIterator]: () => {
        let subscription: Subscription | undefined;
        const stream = new RecordStream<RemoteRecord>(options.highWaterMark ?? 1024, {
          onTake: (record) => subscription?.ack(record),
          // Awaited by the loop's `break`: the records not taken are back on the agent before the
          // code after the loop runs (a receive there gets them).
          onStop: () => subscription?.cancel().catch(() => {}),
          // Sent before the loop goes on past its end, so a close right after it cannot overtake it.
          onDone: () => void subscription?.flush(),
        });
        subscription = this.#session.subscribe(
          selector,
          {
            onRecord: (record) => stream.push(this.#tag(record)),
            onEnd: () => stream.end(),
            onSessionEnd: (reason) => stream.fail(reason),
          },
          { follow: options.wait === true, ack: 'manual', ...(options.keep ? { keep: true } : {}) },
        );
        subscription.jobs.catch((error: unknown) => stream.fail(error));
        return stream[Symbol.asyncIterator]();
      },
    };
  }

  /**
   * `Receive-Job … > path` where the session is: the agent receives the jobs' records and writes
   * the output stream to `path` on its machine, as its user (`~/` is that user's home, a relative
   * path is against the session's cwd; `append` adds to the file). The other streams' records
   * come back in `other`, tagged like `receive`'s. A failed write rejects with ERR_FILE_WRITE
   * (the OS code in `details.osCode`) and consumes nothing.
   */
  async receiveToFile(
    selector: WireSelector,
    path: string,
    options: { keep?: boolean; append?: boolean } = {},
  ): Promise<Omit<ReceiveToFileResult, 'other'> & { other: RemoteRecord[] }> {
    const result = await this.#session.request('job.receiveToFile', {
      selector,
      path,
      ...(options.keep === undefined ? {} : { keep: options.keep }),
      ...(options.append === undefined ? {} : { append: options.append }),
    });
    // Throws ERR_MESSAGE_INVALID for bytes that are not whole record entries.
    return { ...result, other: decodeRecordRuns(result.other).map((record) => this.#tag(record)) };
  }

  /** Wait-Job: the finished jobs (the first with `any`); a timeout returns []. */
  async wait(
    selector: WireSelector,
    options: { any?: boolean; timeoutMs?: number } = {},
  ): Promise<RemoteJobInfo[]> {
    const infos = await this.#session.request('job.wait', { selector, ...options });
    return infos.map((info) => this.#revive(info));
  }

  async stop(selector: WireSelector): Promise<RemoteJobInfo[]> {
    return (await this.#session.request('job.stop', { selector })).map((info) => this.#revive(info));
  }

  async remove(selector: WireSelector, options: { force?: boolean } = {}): Promise<RemoteJobInfo[]> {
    const infos = await this.#session.request('job.remove', {
      selector,
      ...(options.force === undefined ? {} : { force: options.force }),
    });
    return infos.map((info) => this.#revive(info));
  }

  /** Runs finished jobs again as new jobs with the same definition (`job.restart`). */
  async restart(selector: WireSelector): Promise<RemoteJobInfo[]> {
    return (await this.#session.request('job.restart', { selector })).map((info) => this.#revive(info));
  }

  /** Suspends running process jobs (`job.suspend`: SIGSTOP to each one's process group). */
  async suspend(selector: WireSelector): Promise<RemoteJobInfo[]> {
    return (await this.#session.request('job.suspend', { selector })).map((info) => this.#revive(info));
  }

  /** Lets suspended jobs go on (`job.resume`: SIGCONT). */
  async resume(selector: WireSelector): Promise<RemoteJobInfo[]> {
    return (await this.#session.request('job.resume', { selector })).map((info) => this.#revive(info));
  }

  #revive(info: JobInfo): RemoteJobInfo {
    return reviveJobInfo(info, this.#session.computerName);
  }

  #tag(record: JobRecord): RemoteRecord {
    const out: RemoteRecord = { ...record, computerName: this.#session.computerName };
    // A Failed job's reason crosses the wire serialized when the agent could not clone it as is.
    if (out.reason && isSerializedError(out.data)) out.data = deserializeError(out.data);
    return out;
  }
}

function isWorkRequest(value: unknown): value is WorkRequest & { name?: string; type?: string } {
  return typeof value === 'object' && value !== null && 'definition' in value;
}

function isSerializedError(value: unknown): value is Parameters<typeof deserializeError>[0] {
  return (
    typeof value === 'object' &&
    value !== null &&
    !(value instanceof Error) &&
    typeof (value as { message?: unknown }).message === 'string' &&
    typeof (value as { name?: unknown }).name === 'string'
  );
}
