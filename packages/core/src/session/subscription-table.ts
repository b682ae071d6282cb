/**
 * The session client's subscriptions (an invoke's, `job.subscribe`'s): their handlers, the acks of
 * what each handler took, the remote jobs each streams, and the subscriptions relayed as they came.
 * Turns the agent's `job.packed` and `job.end` events into handler calls.
 */
import { decodeRecordEntries } from '../codec/record-entries.js';
import { RjobError } from '../errors.js';
import type { JobRecord } from '../job/records.js';
import { ProtocolErrorCode } from '../protocol/protocol-errors.js';
import { type RemoteJobInfo, reviveJobInfo } from './remote-job-manager.js';
import type { JobInfo, SessionEvents } from './rpc.js';
import type { RemoteRecord, SubscriptionHandlers } from './session-types.js';

export class SubscriptionTable {
  readonly #computerName: string;
  readonly #onJobState: (job: RemoteJobInfo) => void;
  readonly #handlers = new Map<string, SubscriptionHandlers>();
  /** Called for each record a subscription's handler took (auto acks). */
  readonly #taken = new Map<string, (record: RemoteRecord) => void>();
  /** Remote job ids each live subscription streams, so receive() does not mirror a job twice. */
  readonly #subscribedIds = new Map<string, number[]>();
  readonly #relays = new Map<string, (name: string, data: unknown) => void | Promise<void>>();

  /** Records are tagged with `computerName`; `job.state` events go to `onJobState`. */
  constructor(computerName: string, onJobState: (job: RemoteJobInfo) => void) {
    this.#computerName = computerName;
    this.#onJobState = onJobState;
  }

  /** A subscription's handlers, and what to call for each record they took (auto acks). */
  add(subscriptionId: string, handlers: SubscriptionHandlers, taken?: (record: RemoteRecord) => void): void {
    this.#handlers.set(subscriptionId, handlers);
    if (taken) this.#taken.set(subscriptionId, taken);
  }

  /** Forgets a subscription; true when it was still live. */
  remove(subscriptionId: string): boolean {
    this.#subscribedIds.delete(subscriptionId);
    this.#taken.delete(subscriptionId);
    return this.#handlers.delete(subscriptionId);
  }

  /** The remote jobs a live subscription streams (what `job.subscribe` answered). */
  streaming(subscriptionId: string, jobIds: number[]): void {
    if (this.#handlers.has(subscriptionId)) this.#subscribedIds.set(subscriptionId, jobIds);
  }

  /** Every remote job a live subscription streams. */
  streamedJobIds(): Set<number> {
    return new Set([...this.#subscribedIds.values()].flat());
  }

  /** The session ended: every subscription is told, and none is left. */
  end(reason: RjobError): void {
    const subscriptions = [...this.#handlers.values()];
    this.#handlers.clear();
    this.#subscribedIds.clear();
    for (const s of subscriptions) s.onSessionEnd?.(reason);
  }

  /** Hands subscription `subscriptionId`'s events to `sink` as they came; returns what stops it. */
  relay(subscriptionId: string, sink: (name: string, data: unknown) => void | Promise<void>): () => void {
    this.#relays.set(subscriptionId, sink);
    return () => {
      if (this.#relays.get(subscriptionId) === sink) this.#relays.delete(subscriptionId);
    };
  }

  /** Handles one event from the agent: relayed, or decoded and handed to its subscription. */
  event(name: string, data: unknown): void | Promise<void> {
    const relayed =
      this.#relays.size > 0 ? (data as { subscriptionId?: unknown } | undefined)?.subscriptionId : undefined;
    if (typeof relayed === 'string') {
      const sink = this.#relays.get(relayed);
      if (sink) return sink(name, data);
    }
    switch (name) {
      case 'job.packed': {
        const event = data as SessionEvents['job.packed'];
        const handlers = this.#handlers.get(event?.subscriptionId);
        if (!handlers) return;
        if (!(event.entries instanceof Uint8Array)) {
          throw new RjobError(ProtocolErrorCode.MessageInvalid, 'job.packed carries no entries.');
        }
        // Throws ERR_MESSAGE_INVALID for bytes that are not whole entries; the channel then fails.
        return this.#deliver(
          handlers,
          decodeRecordEntries(event.entries),
          0,
          this.#taken.get(event.subscriptionId),
          event.subscriptionId,
        );
      }
      case 'job.end': {
        const event = data as SessionEvents['job.end'];
        const handlers = this.#handlers.get(event?.subscriptionId);
        if (!handlers) return;
        this.#handlers.delete(event.subscriptionId);
        this.#subscribedIds.delete(event.subscriptionId);
        this.#taken.delete(event.subscriptionId);
        handlers.onEnd(event.jobs.map((info: JobInfo) => reviveJobInfo(info, this.#computerName)));
        return;
      }
      case 'job.state': {
        const event = data as SessionEvents['job.state'];
        this.#onJobState(reviveJobInfo(event.job, this.#computerName));
        return;
      }
      default:
        return;
    }
  }

  /**
   * Hands a batch's records to the handler one at a time, from `start`. Synchronous while the
   * handler is; from the first promise it returns on, the rest waits for it (so the channel, which
   * waits for the promise this returns, stops granting credit exactly as for single records).
   */
  #deliver(
    handlers: SubscriptionHandlers,
    records: JobRecord[],
    start: number,
    taken?: (record: RemoteRecord) => void,
    subscriptionId?: string,
  ): void | Promise<void> {
    const computerName = this.#computerName;
    for (let i = start; i < records.length; i++) {
      // A handler that cancelled its subscription gets no more of the batch, nor are they taken.
      if (subscriptionId !== undefined && this.#handlers.get(subscriptionId) !== handlers) return;
      // Tagged in place: the batch was just decoded for us, nobody else holds its records.
      const record = records[i] as RemoteRecord;
      record.computerName = computerName;
      const pending = handlers.onRecord(record);
      if (pending && typeof (pending as Promise<void>).then === 'function') {
        return (pending as Promise<void>).then(() => {
          taken?.(record);
          return this.#deliver(handlers, records, i + 1, taken, subscriptionId);
        });
      }
      taken?.(record);
    }
  }
}
