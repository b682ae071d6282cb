/**
 * A session's subscriptions and the pump that moves a subscription's records from the record
 * source onto the session's channel (`job.subscribe` and `invoke`).
 */
import type { Job, JobInfo } from '@rjob/core';
import type { ReliableChannel } from '@rjob/core/protocol';
import type { RecordSource } from './record-source.js';
import { sendEvent } from './reply.js';
import { invalidParams } from './wire.js';

export interface Subscription {
  readonly id: string;
  /**
   * The client acknowledges records itself (`job.ack`) as its receiver takes them; the channel's
   * own acks (the bytes arrived) consume nothing. A consuming subscription without it is
   * committed on the channel's acks (invoke's temporary job).
   */
  readonly clientAck: boolean;
  /** Per leaf job id: the leaf, the last record sent and the last the client acknowledged. */
  readonly sent: Map<number, { leaf: Job; sentSeq: number; ackedSeq: number }>;
  /** Aborted when the subscription is cancelled; ends its record stream. */
  readonly signal: AbortSignal;
  cancel(): void;
  /** Called after each client ack (the pump waits on it once everything was sent). */
  onAck?: () => void;
}

/** The subscriptions of one session, by id. */
export class SubscriptionTable {
  readonly #byId = new Map<string, Subscription>();

  /** A new subscription under `id`; refused when the session has one by that id already. */
  open(id: string, options: { clientAck: boolean }): Subscription {
    if (this.#byId.has(id)) {
      throw invalidParams(`Subscription "${id}" already exists in this session.`, { subscriptionId: id });
    }
    const controller = new AbortController();
    const subscription: Subscription = {
      id,
      ...options,
      sent: new Map(),
      signal: controller.signal,
      cancel: () => controller.abort(),
    };
    this.#byId.set(id, subscription);
    return subscription;
  }

  get(id: string): Subscription | undefined {
    return this.#byId.get(id);
  }

  /** Cancels the subscription under `id`, if any, and forgets it. */
  cancel(id: string): void {
    this.#byId.get(id)?.cancel();
    this.#byId.delete(id);
  }

  /** Cancels every subscription (the channel they were on is gone, or the session ends). */
  cancelAll(): void {
    for (const subscription of this.#byId.values()) subscription.cancel();
    this.#byId.clear();
  }

  /** Forgets `subscription` if it is still the one under its id. */
  remove(subscription: Subscription): void {
    if (this.#byId.get(subscription.id) === subscription) this.#byId.delete(subscription.id);
  }
}

/** What the pump works with: the session's records, its job-info shape and its subscriptions. */
export interface PumpSource {
  readonly records: RecordSource;
  readonly subscriptions: SubscriptionTable;
  info(job: Job): JobInfo;
}

/**
 * Moves records from the jobs into `job.packed` events (the entries as the record source gives
 * them: a spool's as stored, a memory agent's encoded), then sends `job.end`. It only takes a batch when the
 * channel has room: while no client is attached (or the client is slow), the channel's queue
 * reaches its high-water mark and the pump stops taking; then the spool (or the job's buffer)
 * fills and the producer is paused. Returns true when every record was sent.
 *
 * With `clientAck`, records are consumed as the client's `job.ack`s say its receiver took them;
 * the subscription stays until everything sent was acknowledged, or it is cancelled (then what
 * was not acknowledged goes back to the spools). Otherwise a batch is committed once the
 * channel acknowledged the event that carried its last record (invoke's temporary job).
 */
export async function pump(
  source: PumpSource,
  subscription: Subscription,
  jobs: Job[],
  options: { keep: boolean; follow: boolean },
  channel: ReliableChannel,
): Promise<boolean> {
  const { keep } = options;
  const { signal } = subscription;
  const cancelled = new Promise<void>((resolveCancel) => {
    if (signal.aborted) resolveCancel();
    else signal.addEventListener('abort', () => resolveCancel(), { once: true });
  });
  // Records sent but not yet acknowledged by the client, oldest first, with the event's seq.
  const unacked = new CommitQueue();
  const settle = (): void => unacked.commitUpTo(channel.ackedSeq);
  const offAck = channel.onAck(settle);
  let complete = false;
  try {
    for await (const { entries, commit, leaf, lastSeq } of source.records.stream(jobs, signal, {
      keep,
      follow: options.follow,
    })) {
      const roomy = sendEvent(channel, 'job.packed', { subscriptionId: subscription.id, entries });
      if (subscription.clientAck) {
        if (leaf && lastSeq !== undefined) {
          const entry = subscription.sent.get(leaf.id);
          if (entry) entry.sentSeq = lastSeq;
          else subscription.sent.set(leaf.id, { leaf, sentSeq: lastSeq, ackedSeq: 0 });
        }
      } else if (commit) {
        unacked.push(channel.sentSeq, commit);
      }
      settle();
      // Also rejects when the channel closes, which ends the pump.
      if (!roomy) await Promise.race([channel.drain(), cancelled]);
      if (signal.aborted) break;
    }
    complete = !signal.aborted;
    if (complete) {
      sendEvent(channel, 'job.end', { subscriptionId: subscription.id, jobs: jobs.map(source.info) });
    }
    // The records count as delivered once the client says so; a takeover before that leaves
    // them in the spool for the next client.
    if (unacked.length > 0) await Promise.race([channel.whenAcked(unacked.lastSeq), cancelled]);
    settle();
    if (subscription.clientAck && complete) await Promise.race([allAcked(subscription), cancelled]);
  } catch {
    // The channel closed under the pump (session ended or link broke); nothing left to send to.
    complete = false;
  } finally {
    offAck();
    source.subscriptions.remove(subscription);
  }
  return complete;
}

/** Resolves once the client acknowledged every record the subscription sent. */
function allAcked(subscription: Subscription): Promise<void> {
  const done = (): boolean => [...subscription.sent.values()].every((each) => each.ackedSeq >= each.sentSeq);
  if (done()) return Promise.resolve();
  return new Promise((resolveAcked) => {
    subscription.onAck = () => {
      if (done()) resolveAcked();
    };
  });
}

/** Commits of records in flight, in send order; committed once the client acknowledged them. */
class CommitQueue {
  #seqs: number[] = [];
  #commits: Array<() => void> = [];
  #head = 0;

  get length(): number {
    return this.#seqs.length - this.#head;
  }

  /** The seq of the newest entry (0 when empty). */
  get lastSeq(): number {
    return this.length > 0 ? this.#seqs.at(-1)! : 0;
  }

  push(seq: number, commit: () => void): void {
    this.#seqs.push(seq);
    this.#commits.push(commit);
  }

  commitUpTo(ackedSeq: number): void {
    let last: (() => void) | undefined;
    while (this.#head < this.#seqs.length && this.#seqs[this.#head]! <= ackedSeq) {
      // Commits are cumulative per job; calling each is cheap (they coalesce), and covers
      // streams that move from one job to the next.
      last = this.#commits[this.#head];
      this.#commits[this.#head] = noop;
      this.#head++;
      last?.();
    }
    if (this.#head > 1024 && this.#head * 2 > this.#seqs.length) {
      this.#seqs = this.#seqs.slice(this.#head);
      this.#commits = this.#commits.slice(this.#head);
      this.#head = 0;
    }
  }
}

function noop(): void {}
