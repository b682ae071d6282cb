/**
 * A client's way into a session the agent holds (OpenMessage.relay): the client speaks the session
 * protocol to this agent as to any other, and each request goes on over the held session's open
 * connection, its answer coming back with the same id. Events of the subscriptions the client
 * opened (`job.subscribe`, `invoke`) come back as they arrived, with their flow held back while
 * the client is slow; records it acknowledges (`job.ack`) are acknowledged to the remote agent, so
 * nothing is consumed there before the client has it. The relay ends with its link; it unsubscribes
 * what it subscribed, and the held session stays.
 */
import {
  ErrorCode,
  ProtocolErrorCode,
  type ReliableChannelOptions,
  RjobError,
  type Session,
  serializeError,
  toRjobError,
} from '@rjob/core';
import {
  ReliableChannel,
  type RequestMessage,
  type SequencedMessage,
  type SessionMethod,
} from '@rjob/core/protocol';

/** Methods that open a stream of events tagged with their `subscriptionId`. */
const STREAMING = new Set(['job.subscribe', 'invoke']);

export class RelaySession {
  readonly id: string;
  readonly channel: ReliableChannel;
  readonly #held: Session<any>;
  /** The relay's subscriptions on the held session: id → stops relaying its events. */
  readonly #streams = new Map<string, () => void>();
  readonly #onEnd: () => void;
  #ended = false;

  constructor(
    id: string,
    held: Session<any>,
    channel: ReliableChannelOptions | undefined,
    onEnd: () => void,
  ) {
    this.id = id;
    this.#held = held;
    this.#onEnd = onEnd;
    this.channel = new ReliableChannel(channel);
    this.channel.onMessage((message) => this.#onMessage(message));
    // A relay is one client's, for one link: it does not wait for that client to come back.
    this.channel.onDisconnect(() => this.end());
    this.channel.onClose(() => this.end());
  }

  #onMessage(message: SequencedMessage): void {
    if (message.type !== 'request') return;
    void this.#handle(message);
  }

  async #handle(request: RequestMessage): Promise<void> {
    const { method, params } = request;
    try {
      if (method === 'session.close' || method === 'session.disconnect') {
        // The client leaves the relay; the held session is not its to end here (`hosted.close`).
        const result = method === 'session.disconnect' ? await this.#held.info() : undefined;
        this.#answer(request.id, { result });
        setImmediate(() => this.end());
        return;
      }
      const subscriptionId = STREAMING.has(method)
        ? (params as { subscriptionId?: unknown } | undefined)?.subscriptionId
        : undefined;
      if (typeof subscriptionId === 'string') this.#relay(subscriptionId);
      const result = await this.#held.request(method as SessionMethod, params as never);
      if (method === 'job.unsubscribe') {
        const id = (params as { subscriptionId?: unknown } | undefined)?.subscriptionId;
        if (typeof id === 'string') this.#unrelay(id);
      }
      this.#answer(request.id, { result });
    } catch (error) {
      this.#answer(request.id, { error: serializeError(toRjobError(error, ErrorCode.Remote)) });
    }
  }

  /** Relays the events of `subscriptionId` to the client, holding the held session back while it is slow. */
  #relay(subscriptionId: string): void {
    if (this.#streams.has(subscriptionId)) return;
    // Kept after `job.end` too: until the client acknowledged every record, the remote agent holds
    // the subscription open, and only the relay's `job.unsubscribe` (when the client is gone) hands
    // what it did not acknowledge back to the next receive.
    const stop = this.#held.relayEvents(subscriptionId, (name, data) => {
      if (this.channel.state === 'closed') return;
      const sent = this.channel.send({ type: 'event', name, data });
      if (!sent) return this.channel.drain().catch(() => {});
    });
    this.#streams.set(subscriptionId, stop);
  }

  #unrelay(subscriptionId: string, unsubscribe = false): void {
    const stop = this.#streams.get(subscriptionId);
    if (!stop) return;
    this.#streams.delete(subscriptionId);
    stop();
    if (unsubscribe) void this.#held.request('job.unsubscribe', { subscriptionId }).catch(() => {});
  }

  #answer(id: number, body: { result?: unknown; error?: ReturnType<typeof serializeError> }): void {
    if (this.channel.state === 'closed') return;
    try {
      this.channel.send({ type: 'response', id, ...body });
    } catch (error) {
      // send() may have closed the channel on its way out.
      if ((this.channel.state as string) === 'closed') return;
      // An answer too large for a frame: say so instead of leaving the request hanging.
      this.channel.send({
        type: 'response',
        id,
        error: serializeError(toRjobError(error, ProtocolErrorCode.MessageInvalid)),
      });
    }
  }

  /** Ends the relay: its subscriptions on the held session are cancelled (unacknowledged records stay there). */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    for (const subscriptionId of [...this.#streams.keys()]) this.#unrelay(subscriptionId, true);
    if (this.channel.state !== 'closed') this.channel.close('The relay ended.');
    this.#onEnd();
  }
}

/** The coded error a relay open fails with when the held session cannot be reached. */
export function relayRefused(name: string | undefined, error: unknown): RjobError {
  const reason = toRjobError(error, ErrorCode.Remote);
  if (!name || reason.message.includes(name)) return reason;
  return new RjobError(reason.code, `session ${name}: ${reason.message}`, {
    cause: reason.cause,
    ...(reason.details ? { details: reason.details } : {}),
  });
}
