import type { JobRecord } from '../job/records.js';

/**
 * A subscription's acknowledgements on their way to the agent: the highest seq taken per job,
 * sent as one `job.ack` per turn of the event loop (not one per record).
 */
export class AckBatcher {
  readonly #subscriptionId: string;
  readonly #send: (params: {
    subscriptionId: string;
    acks: Array<{ jobId: number; seq: number }>;
  }) => Promise<unknown>;
  #pending = new Map<number, number>();
  #scheduled = false;
  #inFlight: Promise<unknown> = Promise.resolve();

  constructor(
    subscriptionId: string,
    send: (params: {
      subscriptionId: string;
      acks: Array<{ jobId: number; seq: number }>;
    }) => Promise<unknown>,
  ) {
    this.#subscriptionId = subscriptionId;
    this.#send = send;
  }

  add(record: JobRecord): void {
    // A Failed job's reason (seq 0) is repeated on every receive; it is not consumed.
    if (record.reason || !(record.seq > 0)) return;
    const known = this.#pending.get(record.jobId);
    if (known === undefined || record.seq > known) this.#pending.set(record.jobId, record.seq);
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => void this.flush());
    }
  }

  flush(): Promise<void> {
    this.#scheduled = false;
    if (this.#pending.size > 0) {
      const acks = [...this.#pending].map(([jobId, seq]) => ({ jobId, seq }));
      this.#pending = new Map();
      // An ack the session cannot deliver any more (it ended) leaves the records on the agent.
      this.#inFlight = this.#send({ subscriptionId: this.#subscriptionId, acks }).catch(() => {});
    }
    return this.#inFlight.then(() => {});
  }
}
