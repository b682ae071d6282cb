/**
 * The reliable channel: written once, on top of any {@link TransportChannel}. It numbers the
 * sequenced messages of each direction, acknowledges them cumulatively, keeps what the peer has
 * not acknowledged for replay, limits what is in flight by the credit the receiver grants,
 * detects dead links with heartbeats, and survives link changes: after {@link ReliableChannel.attach}
 * on a new link, the sender replays exactly what the receiver is missing, so the consumer sees
 * every message once, in order. A client that holds none of the state (a new process) takes the
 * session over instead: {@link ReliableChannel.takeOver} hands the session to a successor channel
 * in a new epoch. docs/protocol.md describes the rules in wire terms.
 */
import { deserializeError, ErrorCode, RjobError, serializeError, toRjobError } from '../errors.js';
import type { TransportChannel } from '../transport/transport.js';
import { assertFrameSize, resolveMaxFrameBytes } from './framing.js';
import {
  decodeMessage,
  encodeMessage,
  isSequenced,
  type Message,
  type Payload,
  type SequencedMessage,
} from './messages.js';
import { ProtocolErrorCode } from './protocol-errors.js';

export interface ReliableChannelOptions {
  /** Largest encoded message in bytes. Default 16 MiB. */
  maxFrameBytes?: number;
  /** Messages the peer may send beyond what our consumer has taken. Default 1024. */
  windowMessages?: number;
  /**
   * Bytes the peer may start sending beyond what our consumer has taken. Default 8 MiB. The
   * receive buffer holds at most this plus one message.
   */
  windowBytes?: number;
  /**
   * Sent-but-unacknowledged bytes kept for replay; past it, sending pauses until acks arrive (one
   * message is always allowed, however large). Default 32 MiB.
   */
  maxReplayBytes?: number;
  /** Bytes accepted by `send` but not yet on a link, above which `send` returns false. Default 1 MiB. */
  highWaterMarkBytes?: number;
  /** Interval between pings on an attached link. Default 10 000 ms; 0 disables pings. */
  pingIntervalMs?: number;
  /**
   * A link on which nothing arrives for this long is considered dead and dropped; the channel then
   * waits for {@link ReliableChannel.attach}. Default 30 000 ms; 0 disables the check.
   */
  heartbeatTimeoutMs?: number;
  /** Consumed messages after which an ack is sent even if more are queued. Default windowMessages / 4. */
  ackEveryMessages?: number;
}

export type ReliableChannelState = 'detached' | 'attached' | 'closed';

/** Counters for tests and diagnostics. */
export interface ReliableChannelStats {
  /** Accepted by `send`, not yet written to a link. */
  pendingMessages: number;
  pendingBytes: number;
  /** Written and not yet acknowledged (the replay buffer). */
  inFlightMessages: number;
  inFlightBytes: number;
  /** Received and not yet taken by the consumer. */
  inboundMessages: number;
  inboundBytes: number;
  /** High-water marks of the inbound buffer since creation. */
  maxInboundMessages: number;
  maxInboundBytes: number;
}

export type MessageHandler = (message: SequencedMessage) => void | Promise<void>;

/** What {@link ReliableChannel.onTakeover} handlers learn; the old channel is still open then. */
export interface TakeoverEvent {
  /** The successor: the session's channel from now on, numbering from 1 in `epoch`. */
  channel: ReliableChannel;
  epoch: number;
  /** Highest outgoing sequence number the old client acknowledged: everything up to it was consumed. */
  ackedSeq: number;
  /** Outgoing messages sent or queued but never acknowledged, abandoned with the old channel. */
  discardedOutbound: number;
  /** Incoming messages received but not yet consumed, abandoned with the old channel. */
  discardedInbound: number;
}

interface OutEntry {
  seq: number;
  body: Uint8Array;
  /** Offset of this message in the direction's byte stream (sum of earlier bodies). */
  startOffset: number;
}

interface InEntry {
  message: SequencedMessage;
  bytes: number;
}

/** FIFO with O(1) shift; arrays shift in O(n), which matters with 100k messages queued. */
class Queue<T> {
  #items: T[] = [];
  #head = 0;
  get length(): number {
    return this.#items.length - this.#head;
  }
  push(item: T): void {
    this.#items.push(item);
  }
  at(index: number): T | undefined {
    return this.#items[this.#head + index];
  }
  shift(): T | undefined {
    if (this.#head >= this.#items.length) return undefined;
    const item = this.#items[this.#head];
    this.#items[this.#head++] = undefined as T;
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return item;
  }
  clear(): void {
    this.#items = [];
    this.#head = 0;
  }
}

const RESUMABLE_LINK_CODES: ReadonlySet<string> = new Set([
  ProtocolErrorCode.LinkClosed,
  ProtocolErrorCode.HeartbeatTimeout,
  // A stream cut in the middle of a frame is a network failure, not a bad peer.
  ProtocolErrorCode.FrameTruncated,
  // The receiver ran short of room for partly received frames: a load condition, not a bad peer.
  ProtocolErrorCode.FrameBudget,
]);

function positiveInt(name: string, value: number | undefined, fallback: number, allowZero = false): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < (allowZero ? 0 : 1)) {
    throw new RjobError(
      ErrorCode.InvalidArgument,
      `${name} must be ${allowZero ? 'a non-negative' : 'a positive'} integer.`,
      {
        details: { [name]: value },
      },
    );
  }
  return value;
}

export class ReliableChannel {
  readonly maxFrameBytes: number;
  /** Kept so that a takeover's successor gets the same settings. */
  readonly #options: ReliableChannelOptions;
  readonly #windowMessages: number;
  readonly #windowBytes: number;
  readonly #maxReplayBytes: number;
  readonly #highWaterMarkBytes: number;
  readonly #pingIntervalMs: number;
  readonly #heartbeatTimeoutMs: number;
  readonly #ackEveryMessages: number;

  #state: ReliableChannelState = 'detached';
  #closeReason: RjobError | undefined;
  #epoch = 0;
  #everAttached = false;
  #link: TransportChannel | undefined;
  #linkOff: (() => void)[] = [];
  #linkCongested = false;

  // Sending direction.
  #out = new Queue<OutEntry>();
  #outBytes = 0;
  #nextSeq = 1;
  #nextOffset = 0;
  #ackedSeq = 0;
  #ackedBytes = 0;
  /** Highest seq written on the current link (or assumed received by the peer on attach). */
  #sentSeq = 0;
  /** Highest seq ever written on any link: the peer cannot have received more. */
  #highestWrittenSeq = 0;
  #peerCreditSeq = 0;
  #peerCreditBytes = 0;

  // Receiving direction.
  #inbox = new Queue<InEntry>();
  #inboxBytes = 0;
  #maxInboxMessages = 0;
  #maxInboxBytes = 0;
  #receivedSeq = 0;
  #receivedBytes = 0;
  #consumedSeq = 0;
  #consumedBytes = 0;
  #grantedSeq = 0;
  #grantedBytes = 0;
  #reportedAckSeq = 0;
  #reportScheduled = false;
  #delivering = false;
  #handler: MessageHandler | undefined;

  // Heartbeats.
  #pingTimer: ReturnType<typeof setInterval> | undefined;
  #deadTimer: ReturnType<typeof setTimeout> | undefined;
  #lastHeardMs = 0;
  #pingNonce = 0;

  #drainWaiters: { resolve: () => void; reject: (error: RjobError) => void }[] = [];
  #ackWaiters: { seq: number; resolve: () => void; reject: (error: RjobError) => void }[] = [];
  #ackHandlers = new Set<(ackedSeq: number) => void>();
  #disconnectHandlers = new Set<(reason: RjobError) => void>();
  #closeHandlers = new Set<(reason: RjobError) => void>();
  #takeoverHandlers = new Set<(event: TakeoverEvent) => void>();

  constructor(options: ReliableChannelOptions = {}) {
    this.#options = { ...options };
    this.maxFrameBytes = resolveMaxFrameBytes(options.maxFrameBytes);
    this.#windowMessages = positiveInt('windowMessages', options.windowMessages, 1024);
    this.#windowBytes = positiveInt('windowBytes', options.windowBytes, 8 * 1024 * 1024);
    this.#maxReplayBytes = positiveInt('maxReplayBytes', options.maxReplayBytes, 32 * 1024 * 1024);
    this.#highWaterMarkBytes = positiveInt('highWaterMarkBytes', options.highWaterMarkBytes, 1024 * 1024);
    this.#pingIntervalMs = positiveInt('pingIntervalMs', options.pingIntervalMs, 10_000, true);
    this.#heartbeatTimeoutMs = positiveInt('heartbeatTimeoutMs', options.heartbeatTimeoutMs, 30_000, true);
    this.#ackEveryMessages = positiveInt(
      'ackEveryMessages',
      options.ackEveryMessages,
      Math.max(1, Math.floor(this.#windowMessages / 4)),
    );
  }

  get state(): ReliableChannelState {
    return this.#state;
  }
  /** Why the channel closed, once it has. */
  get closeReason(): RjobError | undefined {
    return this.#closeReason;
  }
  /** Highest sequence number received from the peer: what to put in `resume.lastSeq`. */
  get receivedSeq(): number {
    return this.#receivedSeq;
  }
  /** Highest sequence number the consumer has finished with. */
  get consumedSeq(): number {
    return this.#consumedSeq;
  }
  /** Highest sequence number assigned to an outgoing message. */
  get sentSeq(): number {
    return this.#nextSeq - 1;
  }
  /** Highest outgoing sequence number the peer has acknowledged. */
  get ackedSeq(): number {
    return this.#ackedSeq;
  }
  /**
   * Which generation of the session this channel carries: 0 for the channel of `open`, one more
   * for each takeover. Sequence numbers only mean something within one epoch.
   */
  get epoch(): number {
    return this.#epoch;
  }
  /** True until the first {@link attach}: no peer has seen or sent anything on this channel. */
  get pristine(): boolean {
    return !this.#everAttached && this.#state !== 'closed';
  }

  stats(): ReliableChannelStats {
    const inFlight = this.#sentSeq - this.#ackedSeq;
    const inFlightBytes = this.#outBytes - this.#pendingBytes();
    return {
      pendingMessages: this.#out.length - inFlight,
      pendingBytes: this.#outBytes - inFlightBytes,
      inFlightMessages: inFlight,
      inFlightBytes,
      inboundMessages: this.#inbox.length,
      inboundBytes: this.#inboxBytes,
      maxInboundMessages: this.#maxInboxMessages,
      maxInboundBytes: this.#maxInboxBytes,
    };
  }

  /**
   * Queues a message; it is numbered now and delivered exactly once, in order, across link
   * changes. Returns false when the caller should wait for {@link drain} before sending more
   * (the message was still accepted). Throws ERR_FRAME_TOO_LARGE or ERR_VALUE_NOT_CLONEABLE for
   * a message that can never be sent (the channel is unaffected), ERR_CHANNEL_CLOSED after close.
   */
  send(payload: Payload): boolean {
    if (this.#state === 'closed') throw this.#closedError();
    const seq = this.#nextSeq;
    const body = encodeMessage({ ...payload, seq } as SequencedMessage);
    assertFrameSize(body.byteLength, this.maxFrameBytes);
    this.#nextSeq++;
    this.#out.push({ seq, body, startOffset: this.#nextOffset });
    this.#nextOffset += body.byteLength;
    this.#outBytes += body.byteLength;
    this.#pump();
    return this.#pendingBytes() < this.#highWaterMarkBytes;
  }

  /** Resolves once unsent bytes are below the high-water mark; rejects if the channel closes. */
  drain(): Promise<void> {
    if (this.#state === 'closed') return Promise.reject(this.#closedError());
    if (this.#pendingBytes() < this.#highWaterMarkBytes) return Promise.resolve();
    return new Promise((resolve, reject) => this.#drainWaiters.push({ resolve, reject }));
  }

  /**
   * Sets the consumer. Messages are handed over one at a time; when the handler returns a
   * promise, the next waits for it, and credit is only returned to the peer as messages are
   * finished, which is what bounds the receive buffer. A handler that throws closes the channel.
   */
  onMessage(handler: MessageHandler): () => void {
    this.#handler = handler;
    queueMicrotask(() => this.#deliver());
    return () => {
      if (this.#handler === handler) this.#handler = undefined;
    };
  }

  /** Called when a link is lost in a way that can be resumed (cut, heartbeat timeout). */
  onDisconnect(handler: (reason: RjobError) => void): () => void {
    this.#disconnectHandlers.add(handler);
    return () => this.#disconnectHandlers.delete(handler);
  }

  /**
   * Called each time the peer's cumulative ack moves forward, with the new {@link ackedSeq}:
   * every outgoing message up to it has been consumed by the peer's consumer. Synchronous; a
   * handler that throws is ignored (it must not take the link down).
   */
  onAck(handler: (ackedSeq: number) => void): () => void {
    this.#ackHandlers.add(handler);
    return () => this.#ackHandlers.delete(handler);
  }

  /**
   * Resolves once the peer has acknowledged outgoing message `seq` (read {@link sentSeq} right
   * after `send` to learn a message's number). Rejects with the close reason if the channel
   * closes first; a takeover closes it with ERR_SESSION_TAKEN_OVER, so a message the old client
   * never acknowledged never counts as delivered.
   */
  whenAcked(seq: number): Promise<void> {
    if (!Number.isSafeInteger(seq) || seq < 0 || seq > this.sentSeq) {
      return Promise.reject(
        new RjobError(ErrorCode.InvalidArgument, `Message ${seq} was never sent on this channel.`, {
          details: { seq, sentSeq: this.sentSeq },
        }),
      );
    }
    if (seq <= this.#ackedSeq) return Promise.resolve();
    if (this.#state === 'closed') return Promise.reject(this.#closedError());
    return new Promise((resolve, reject) => this.#ackWaiters.push({ seq, resolve, reject }));
  }

  /**
   * Server side: called when a new client takes the session over ({@link takeOver}), before this
   * channel closes. The handler must make `event.channel` the session's channel and drop whatever
   * belonged to the old client (subscriptions, unacknowledged deliveries): the new client numbers
   * from 1 again and re-subscribes from what was acknowledged.
   */
  onTakeover(handler: (event: TakeoverEvent) => void): () => void {
    this.#takeoverHandlers.add(handler);
    return () => this.#takeoverHandlers.delete(handler);
  }

  /** Called once, when the channel closes for good. */
  onClose(handler: (reason: RjobError) => void): () => void {
    if (this.#closeReason) {
      const reason = this.#closeReason;
      queueMicrotask(() => handler(reason));
      return () => {};
    }
    this.#closeHandlers.add(handler);
    return () => this.#closeHandlers.delete(handler);
  }

  /**
   * Puts the channel on a link. `peerReceivedSeq` is the highest of our sequence numbers the peer
   * says it holds (from the handshake); everything after it is replayed. A link already attached
   * is dropped first. Throws ERR_RESUME_FAILED (and closes the channel) when the peer asks for
   * messages it had already acknowledged or that were never sent.
   */
  attach(link: TransportChannel, peerReceivedSeq: number): void {
    if (this.#state === 'closed') {
      link.close(this.#closedError());
      throw this.#closedError();
    }
    if (this.#link)
      this.#dropLink(new RjobError(ProtocolErrorCode.LinkClosed, 'Link replaced by a new one.'), false);
    if (
      !Number.isSafeInteger(peerReceivedSeq) ||
      peerReceivedSeq < this.#ackedSeq ||
      peerReceivedSeq > this.#highestWrittenSeq
    ) {
      const error = new RjobError(
        ProtocolErrorCode.ResumeFailed,
        `Peer resumes after message ${peerReceivedSeq}, but only ${this.#ackedSeq + 1}..${this.#highestWrittenSeq} can be replayed.`,
        { details: { peerReceivedSeq, ackedSeq: this.#ackedSeq, highestSentSeq: this.#highestWrittenSeq } },
      );
      this.#link = link;
      this.#fail(error);
      throw error;
    }
    this.#link = link;
    this.#state = 'attached';
    this.#everAttached = true;
    this.#linkCongested = false;
    this.#sentSeq = peerReceivedSeq;
    this.#lastHeardMs = Date.now();
    this.#linkOff = [
      link.onMessage((frame) => this.#onFrame(link, frame)),
      link.onClose((reason) => {
        if (this.#link === link) this.#onLinkClosed(reason);
      }),
      link.onDrain?.(() => {
        if (this.#link !== link) return;
        this.#linkCongested = false;
        this.#pump();
      }) ?? (() => {}),
    ];
    this.#startHeartbeat();
    // Tell the peer where we stand; both values are cumulative, so repeating them is harmless.
    this.#writeControl({ type: 'ack', seq: this.#consumedSeq });
    this.#reportedAckSeq = this.#consumedSeq;
    this.#grant(true);
    this.#pump();
  }

  /**
   * Server side of a takeover (docs/protocol.md, "Session takeover"): a client that holds none of
   * this channel's state wants the session. Sequence numbers of the old client's requests and of
   * our unacknowledged messages cannot be carried over to it, so rather than renumber, the session
   * moves to a successor channel (same options, epoch + 1, every counter at 0): the returned
   * channel, which the caller attaches to the new link with `peerReceivedSeq` 0. First the
   * {@link onTakeover} handlers run (this channel is still open, so its counters can be read);
   * then this channel closes with ERR_SESSION_TAKEN_OVER, telling the old client on its link if
   * there still is one. Its queued and unacknowledged messages and unconsumed input are dropped,
   * pending {@link drain} and {@link whenAcked} calls reject, and later sends on it throw.
   */
  takeOver(): ReliableChannel {
    if (this.#state === 'closed') throw this.#closedError();
    const next = new ReliableChannel(this.#options);
    next.#epoch = this.#epoch + 1;
    const event: TakeoverEvent = {
      channel: next,
      epoch: next.#epoch,
      ackedSeq: this.#ackedSeq,
      discardedOutbound: this.sentSeq - this.#ackedSeq,
      discardedInbound: this.#inbox.length,
    };
    let failure: unknown;
    let failed = false;
    for (const handler of [...this.#takeoverHandlers]) {
      try {
        handler(event);
      } catch (error) {
        // Close this channel anyway: the old client must not keep the session.
        if (!failed) failure = error;
        failed = true;
      }
    }
    this.#takeoverHandlers.clear();
    this.#fail(
      new RjobError(ProtocolErrorCode.SessionTakenOver, 'The session was taken over by another client.', {
        details: { epoch: next.#epoch },
      }),
    );
    if (failed) throw failure;
    return next;
  }

  /**
   * Client side of a takeover: a channel that was never attached takes the epoch the server
   * announced in `resumed`, so that its later resumes name it. Throws on a channel with history.
   */
  joinEpoch(epoch: number): void {
    if (!this.pristine) {
      throw new RjobError(
        ErrorCode.InvalidArgument,
        'Only a channel that was never attached can join an epoch (a takeover needs a fresh channel).',
      );
    }
    this.#epoch = positiveInt('epoch', epoch, 0, true);
  }

  /** Drops the current link (it is closed) and waits for the next {@link attach}. */
  detach(reason?: Error | string): void {
    if (!this.#link || this.#state === 'closed') return;
    const error = RjobError.is(reason)
      ? reason
      : new RjobError(ProtocolErrorCode.LinkClosed, typeof reason === 'string' ? reason : 'Link detached.', {
          ...(reason instanceof Error ? { cause: reason } : {}),
        });
    this.#dropLink(error, true);
  }

  /**
   * Ends the channel: tells the peer (`close` message), closes the link, and fails later sends.
   * Messages not yet acknowledged are abandoned; wait for {@link drain} and acks first to avoid that.
   */
  close(reason?: string): void {
    if (this.#state === 'closed') return;
    this.#writeControl(reason === undefined ? { type: 'close' } : { type: 'close', reason });
    this.#finish(new RjobError(ProtocolErrorCode.ChannelClosed, reason ?? 'Channel closed.'));
  }

  // ---- receiving -----------------------------------------------------------------------------

  #onFrame(link: TransportChannel, frame: Uint8Array): void {
    if (link !== this.#link || this.#state !== 'attached') return;
    this.#lastHeardMs = Date.now();
    let message: Message;
    try {
      message = decodeMessage(frame);
    } catch (error) {
      this.#fail(toRjobError(error, ProtocolErrorCode.MessageInvalid));
      return;
    }
    try {
      this.#handle(message, frame.byteLength);
    } catch (error) {
      this.#fail(toRjobError(error, ProtocolErrorCode.ProtocolViolation));
    }
  }

  #handle(message: Message, bytes: number): void {
    if (isSequenced(message)) {
      this.#receive(message, bytes);
      return;
    }
    switch (message.type) {
      case 'ack':
        this.#onAck(message.seq);
        return;
      case 'credit':
        // Cumulative, so a stale grant is simply ignored.
        this.#peerCreditSeq = Math.max(this.#peerCreditSeq, message.seq);
        this.#peerCreditBytes = Math.max(this.#peerCreditBytes, message.bytes);
        this.#pump();
        return;
      case 'ping':
        this.#writeControl({ type: 'pong', nonce: message.nonce });
        return;
      case 'pong':
        return;
      case 'error': {
        const revived = deserializeError(message.error);
        this.#finish(
          RjobError.is(revived)
            ? revived
            : new RjobError(ProtocolErrorCode.ChannelClosed, `Peer failed: ${revived.message}`, {
                cause: revived,
              }),
        );
        return;
      }
      case 'close':
        this.#finish(
          new RjobError(
            ProtocolErrorCode.ChannelClosed,
            `Channel closed by peer${message.reason ? `: ${message.reason}` : '.'}`,
            {
              details: { byPeer: true },
            },
          ),
        );
        return;
      default:
        throw new RjobError(
          ProtocolErrorCode.ProtocolViolation,
          `Unexpected ${message.type} message after the handshake.`,
          {
            details: { type: message.type },
          },
        );
    }
  }

  #receive(message: SequencedMessage, bytes: number): void {
    if (message.seq !== this.#receivedSeq + 1) {
      throw new RjobError(
        ProtocolErrorCode.Sequence,
        `Expected message ${this.#receivedSeq + 1}, got ${message.seq}.`,
        { details: { expectedSeq: this.#receivedSeq + 1, seq: message.seq } },
      );
    }
    if (message.seq > this.#grantedSeq || this.#receivedBytes >= this.#grantedBytes) {
      throw new RjobError(
        ProtocolErrorCode.FlowControl,
        `Message ${message.seq} exceeds the credit granted.`,
        {
          details: {
            seq: message.seq,
            grantedSeq: this.#grantedSeq,
            offset: this.#receivedBytes,
            grantedBytes: this.#grantedBytes,
          },
        },
      );
    }
    this.#receivedSeq = message.seq;
    this.#receivedBytes += bytes;
    this.#inbox.push({ message, bytes });
    this.#inboxBytes += bytes;
    this.#maxInboxMessages = Math.max(this.#maxInboxMessages, this.#inbox.length);
    this.#maxInboxBytes = Math.max(this.#maxInboxBytes, this.#inboxBytes);
    this.#deliver();
  }

  #deliver(): void {
    if (this.#delivering) return;
    this.#delivering = true;
    while (this.#handler && this.#inbox.length > 0 && this.#state !== 'closed') {
      const entry = this.#inbox.at(0)!;
      let result: void | Promise<void>;
      try {
        result = this.#handler(entry.message);
      } catch (error) {
        this.#delivering = false;
        this.#handlerFailed(error);
        return;
      }
      if (result && typeof (result as Promise<void>).then === 'function') {
        // Stay "delivering" until the promise settles, so messages are handled one at a time
        // and credit only comes back as fast as the consumer really goes.
        (result as Promise<void>).then(
          () => {
            this.#delivering = false;
            this.#consumed();
            this.#deliver();
          },
          (error: unknown) => {
            this.#delivering = false;
            this.#handlerFailed(error);
          },
        );
        return;
      }
      this.#consumed();
    }
    this.#delivering = false;
  }

  #consumed(): void {
    const entry = this.#inbox.shift();
    if (!entry) return;
    this.#inboxBytes -= entry.bytes;
    this.#consumedSeq = entry.message.seq;
    this.#consumedBytes += entry.bytes;
    this.#grant(false);
    if (this.#consumedSeq - this.#reportedAckSeq >= this.#ackEveryMessages) this.#flushAck();
    else if (this.#inbox.length === 0) this.#scheduleAck();
  }

  #handlerFailed(error: unknown): void {
    this.#finish(
      RjobError.is(error)
        ? error
        : new RjobError(
            ProtocolErrorCode.ChannelClosed,
            `Message handler threw: ${String((error as Error)?.message ?? error)}`,
            {
              cause: error,
            },
          ),
    );
  }

  /** Grants more credit when enough was used, or always when `force` (a new link). */
  #grant(force: boolean): void {
    const seq = this.#consumedSeq + this.#windowMessages;
    const bytes = this.#consumedBytes + this.#windowBytes;
    const worth =
      force ||
      seq - this.#grantedSeq >= Math.ceil(this.#windowMessages / 2) ||
      bytes - this.#grantedBytes >= Math.ceil(this.#windowBytes / 2);
    if (!worth) return;
    this.#grantedSeq = Math.max(this.#grantedSeq, seq);
    this.#grantedBytes = Math.max(this.#grantedBytes, bytes);
    this.#writeControl({ type: 'credit', seq: this.#grantedSeq, bytes: this.#grantedBytes });
  }

  #scheduleAck(): void {
    if (this.#reportScheduled) return;
    this.#reportScheduled = true;
    // A microtask, not a timer: a burst of messages handled in one go costs one ack.
    queueMicrotask(() => {
      this.#reportScheduled = false;
      this.#flushAck();
    });
  }

  #flushAck(): void {
    if (this.#consumedSeq <= this.#reportedAckSeq) return;
    if (this.#writeControl({ type: 'ack', seq: this.#consumedSeq })) this.#reportedAckSeq = this.#consumedSeq;
  }

  // ---- sending -------------------------------------------------------------------------------

  #onAck(seq: number): void {
    if (seq > this.#highestWrittenSeq) {
      throw new RjobError(
        ProtocolErrorCode.Sequence,
        `Peer acknowledged message ${seq}, which was never sent.`,
        {
          details: { seq, highestSentSeq: this.#highestWrittenSeq },
        },
      );
    }
    const advanced = seq > this.#ackedSeq;
    while (this.#ackedSeq < seq) {
      const entry = this.#out.shift()!;
      this.#ackedSeq = entry.seq;
      this.#ackedBytes += entry.body.byteLength;
      this.#outBytes -= entry.body.byteLength;
    }
    // After a resume the peer may hold more than we assumed written on this link.
    if (this.#sentSeq < this.#ackedSeq) this.#sentSeq = this.#ackedSeq;
    this.#pump();
    if (advanced) this.#notifyAcked();
  }

  #notifyAcked(): void {
    const acked = this.#ackedSeq;
    if (this.#ackWaiters.length > 0) {
      const due = this.#ackWaiters.filter((w) => w.seq <= acked);
      if (due.length > 0) {
        this.#ackWaiters = this.#ackWaiters.filter((w) => w.seq > acked);
        for (const w of due) w.resolve();
      }
    }
    for (const handler of [...this.#ackHandlers]) {
      try {
        handler(acked);
      } catch {
        // The peer did nothing wrong; a listener's bug must not fail the channel.
      }
    }
  }

  #pendingBytes(): number {
    // Bytes of entries after #sentSeq. Tracked by offsets: everything assigned minus what is on the wire.
    const firstUnsent = this.#out.at(this.#sentSeq - this.#ackedSeq);
    return firstUnsent ? this.#nextOffset - firstUnsent.startOffset : 0;
  }

  #pump(): void {
    const link = this.#link;
    if (link && this.#state === 'attached') {
      while (!this.#linkCongested) {
        const entry = this.#out.at(this.#sentSeq - this.#ackedSeq);
        if (!entry) break;
        if (entry.seq > this.#peerCreditSeq || entry.startOffset >= this.#peerCreditBytes) break;
        const inFlightBytes = entry.startOffset - this.#ackedBytes;
        if (inFlightBytes > 0 && inFlightBytes + entry.body.byteLength > this.#maxReplayBytes) break;
        const accepted = link.send(entry.body);
        if (this.#link !== link) return; // The send closed the link synchronously.
        this.#sentSeq = entry.seq;
        if (entry.seq > this.#highestWrittenSeq) this.#highestWrittenSeq = entry.seq;
        if (accepted === false) this.#linkCongested = true;
      }
    }
    if (this.#drainWaiters.length > 0 && this.#pendingBytes() < this.#highWaterMarkBytes) {
      const waiters = this.#drainWaiters;
      this.#drainWaiters = [];
      for (const w of waiters) w.resolve();
    }
  }

  /** Writes an unsequenced message on the current link; false when there is none. */
  #writeControl(message: Message): boolean {
    const link = this.#link;
    if (!link) return false;
    try {
      link.send(encodeMessage(message));
      return true;
    } catch {
      // Control messages are tiny and well-formed; a failure means the link is going away,
      // which its onClose reports.
      return false;
    }
  }

  // ---- heartbeats ----------------------------------------------------------------------------

  #startHeartbeat(): void {
    this.#stopHeartbeat();
    if (this.#pingIntervalMs > 0) {
      this.#pingTimer = setInterval(() => {
        this.#pingNonce = (this.#pingNonce + 1) % Number.MAX_SAFE_INTEGER;
        this.#writeControl({ type: 'ping', nonce: this.#pingNonce });
      }, this.#pingIntervalMs);
      this.#pingTimer.unref?.();
    }
    if (this.#heartbeatTimeoutMs > 0) this.#armDeadTimer(this.#heartbeatTimeoutMs);
  }

  // Re-armed lazily: every frame only stamps #lastHeardMs, the timer checks the stamp when it fires.
  #armDeadTimer(delayMs: number): void {
    this.#deadTimer = setTimeout(() => {
      const silentMs = Date.now() - this.#lastHeardMs;
      if (silentMs >= this.#heartbeatTimeoutMs) {
        this.#dropLink(
          new RjobError(
            ProtocolErrorCode.HeartbeatTimeout,
            `Nothing heard from the peer for ${silentMs} ms.`,
            {
              details: { silentMs, heartbeatTimeoutMs: this.#heartbeatTimeoutMs },
            },
          ),
          true,
        );
      } else {
        this.#armDeadTimer(this.#heartbeatTimeoutMs - silentMs);
      }
    }, delayMs);
    this.#deadTimer.unref?.();
  }

  #stopHeartbeat(): void {
    if (this.#pingTimer) clearInterval(this.#pingTimer);
    if (this.#deadTimer) clearTimeout(this.#deadTimer);
    this.#pingTimer = undefined;
    this.#deadTimer = undefined;
  }

  // ---- link loss and close -------------------------------------------------------------------

  #onLinkClosed(reason: RjobError): void {
    if (RESUMABLE_LINK_CODES.has(reason.code)) this.#dropLink(reason, true);
    else this.#finish(reason);
  }

  /** Forgets the current link; the channel stays open, waiting for a new one. */
  #dropLink(reason: RjobError, notify: boolean): void {
    const link = this.#link;
    if (!link) return;
    this.#link = undefined;
    this.#stopHeartbeat();
    for (const off of this.#linkOff) off();
    this.#linkOff = [];
    link.close(reason);
    if (this.#state === 'closed') return;
    this.#state = 'detached';
    // What was written but not acknowledged may or may not have arrived; the next attach's
    // peerReceivedSeq says which.
    this.#sentSeq = this.#ackedSeq;
    if (notify) for (const handler of [...this.#disconnectHandlers]) handler(reason);
  }

  /** A protocol violation by the peer: tell it why, and close this channel only. */
  #fail(error: RjobError): void {
    if (this.#state === 'closed') return;
    this.#writeControl({ type: 'error', error: serializeError(error) });
    this.#finish(error);
  }

  #finish(reason: RjobError): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.#closeReason = reason;
    const link = this.#link;
    if (link) {
      this.#link = undefined;
      this.#stopHeartbeat();
      for (const off of this.#linkOff) off();
      this.#linkOff = [];
      link.close(reason);
    }
    this.#stopHeartbeat();
    this.#out.clear();
    this.#outBytes = 0;
    this.#inbox.clear();
    this.#inboxBytes = 0;
    const waiters = [...this.#drainWaiters, ...this.#ackWaiters];
    this.#drainWaiters = [];
    this.#ackWaiters = [];
    for (const w of waiters) w.reject(reason);
    const handlers = [...this.#closeHandlers];
    this.#closeHandlers.clear();
    this.#disconnectHandlers.clear();
    this.#ackHandlers.clear();
    this.#takeoverHandlers.clear();
    for (const handler of handlers) handler(reason);
  }

  #closedError(): RjobError {
    return new RjobError(ProtocolErrorCode.ChannelClosed, 'The channel is closed.', {
      ...(this.#closeReason ? { cause: this.#closeReason } : {}),
    });
  }
}
