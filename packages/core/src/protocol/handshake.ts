/**
 * The per-link handshake of protocol v1: version negotiation (`hello` / `welcome`), then opening a
 * new session (`open` / `opened`) or resuming one (`resume` / `resumed`), after which the link is
 * handed to the session's {@link ReliableChannel}. Each side learns how far the other got, which
 * is what lets the channel replay exactly the missing messages. A client with no channel state
 * (only the session id and secret) resumes with `takeover` and the session moves to a new epoch.
 */
import { ErrorCode, RjobError, serializeError, toRjobError } from '../errors.js';
import type { TransportChannel } from '../transport/transport.js';
import {
  decodeMessage,
  encodeMessage,
  type Message,
  type RelayRequest,
  SUPPORTED_PROTOCOL_VERSIONS,
} from './messages.js';
import { ProtocolErrorCode } from './protocol-errors.js';
import type { ReliableChannel } from './reliable-channel.js';

/** Default time allowed for the whole handshake on one link. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

interface HandshakeCommon {
  /** Versions this side speaks, most preferred first. Default: every supported version. */
  versions?: readonly number[];
  /** Free text naming this software, for the peer's logs. */
  software?: string;
  /** Time allowed for the handshake, in milliseconds. Default 10 000. */
  handshakeTimeoutMs?: number;
}

export interface ClientHandshakeOptions extends HandshakeCommon {
  /** The session's channel: a new one to open a session, the existing one to resume. */
  channel: ReliableChannel;
  /** Identity token sent in `hello`. */
  token?: string;
  /**
   * Resume this session instead of opening a new one. With `takeover`, `channel` must be pristine
   * (never attached): the client has none of the session's channel state, and the server starts a
   * new epoch for it instead of replaying (docs/protocol.md, "Session takeover").
   */
  resume?: { sessionId: string; resumeSecret: string; takeover?: boolean };
  /** When opening: a session on the identity's job host (OpenMessage.host). */
  host?: boolean;
  /** When opening: a relay to a session the agent holds (OpenMessage.relay). */
  relay?: RelayRequest;
}

export interface ClientHandshakeResult {
  version: number;
  sessionId: string;
  /** Present when a session was opened (the secret to keep for resuming it). */
  resumeSecret?: string;
  resumed: boolean;
  /** What the server calls its software (`welcome.software`), e.g. `rjob/1.2.0`. */
  software?: string;
}

export interface ServerHandshakeOptions extends HandshakeCommon {
  /** Checks the identity token; throw (ERR_UNAUTHORIZED) to refuse. */
  authenticate?(token: string | undefined): void | Promise<void>;
  /** Creates a session and its channel. */
  open(context: {
    token: string | undefined;
    version: number;
    /** The client asked for a session on its identity's job host (OpenMessage.host). */
    host: boolean;
    /** The client asked for a relay to a session the agent holds (OpenMessage.relay). */
    relay?: RelayRequest;
  }): SessionHandle | Promise<SessionHandle>;
  /**
   * Finds the session to resume and checks its secret (in constant time); returns its current
   * channel. Throw ERR_SESSION_NOT_FOUND for an unknown id, a wrong secret or another identity's
   * session, so the answer does not tell them apart. With `takeover`, the handshake then calls
   * {@link ReliableChannel.takeOver} on the returned channel: its `onTakeover` handlers must swap
   * the session to the successor channel.
   */
  resume(request: {
    sessionId: string;
    resumeSecret: string;
    token: string | undefined;
    version: number;
    takeover: boolean;
  }): ReliableChannel | Promise<ReliableChannel>;
}

export interface SessionHandle {
  sessionId: string;
  resumeSecret: string;
  channel: ReliableChannel;
}

export interface ServerHandshakeResult {
  version: number;
  sessionId: string;
  token: string | undefined;
  resumed: boolean;
  /** The resume was a takeover: `channel` is the successor of the one `resume` returned. */
  takenOver: boolean;
  /** The channel now attached to the link. */
  channel: ReliableChannel;
}

/** Reads the next messages of a link one at a time during the handshake. */
class HandshakeReader {
  #queue: Message[] = [];
  #waiter: { resolve: (m: Message) => void; reject: (e: RjobError) => void; last: boolean } | undefined;
  #failure: RjobError | undefined;
  #offMessage: () => void;
  #offClose: () => void;
  #timer: ReturnType<typeof setTimeout>;

  constructor(
    readonly link: TransportChannel,
    timeoutMs: number,
    /**
     * Types that end this side's reading even when they arrive before anyone asked for them: a
     * pipelined `open` gets `welcome` and `opened` back to back, and what follows `opened` (the
     * peer's first ack and credit) must stay on the link for the channel.
     */
    lastTypes: readonly Message['type'][] = [],
  ) {
    this.#offMessage = link.onMessage((frame) => {
      if (this.#failure) return;
      let message: Message;
      try {
        message = decodeMessage(frame);
      } catch (error) {
        this.fail(toRjobError(error, ProtocolErrorCode.MessageInvalid));
        return;
      }
      if (this.#waiter) {
        const waiter = this.#waiter;
        this.#waiter = undefined;
        // Stop reading synchronously: what follows the last handshake message (the peer's first
        // ack and credit) must stay on the link until the channel attaches.
        if (waiter.last) this.#offMessage();
        waiter.resolve(message);
      } else {
        this.#queue.push(message);
        if (lastTypes.includes(message.type)) this.#offMessage();
      }
    });
    this.#offClose = link.onClose((reason) => this.#setFailure(reason));
    this.#timer = setTimeout(() => {
      this.fail(
        new RjobError(ProtocolErrorCode.HandshakeTimeout, `Handshake not finished within ${timeoutMs} ms.`, {
          details: { handshakeTimeoutMs: timeoutMs },
        }),
      );
    }, timeoutMs);
    this.#timer.unref?.();
  }

  /** The next message; `last` when it ends this side's reading (the answer to open or resume). */
  next(last = false): Promise<Message> {
    if (this.#failure) return Promise.reject(this.#failure);
    const queued = this.#queue.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject, last };
    });
  }

  send(message: Message): void {
    this.link.send(encodeMessage(message));
  }

  /** Stops reading; frames that follow stay on the link for the channel. */
  release(): void {
    clearTimeout(this.#timer);
    this.#offMessage();
    this.#offClose();
    // The link closed after the last handshake message arrived, before this side took it up: the
    // channel must not attach to a dead link (whose close it would never hear).
    if (this.#failure) throw this.#failure;
    if (this.#queue.length > 0) {
      // Nothing may follow the final handshake message before the peer has seen ours.
      this.fail(
        new RjobError(ProtocolErrorCode.ProtocolViolation, 'Unexpected message during the handshake.'),
      );
      throw this.#failure;
    }
  }

  /** Reports `error` to the peer, closes the link and fails the handshake. */
  fail(error: RjobError): void {
    if (this.#failure) return;
    try {
      if (error.code !== ProtocolErrorCode.LinkClosed)
        this.send({ type: 'error', error: serializeError(error) });
    } catch {
      // The link is already unusable; closing it below is all that is left to do.
    }
    this.#setFailure(error);
    this.link.close(error);
  }

  #setFailure(error: RjobError): void {
    if (this.#failure) return;
    this.#failure = error;
    clearTimeout(this.#timer);
    this.#offMessage();
    this.#offClose();
    this.#waiter?.reject(error);
    this.#waiter = undefined;
  }
}

function expectType<T extends Message['type']>(
  message: Message,
  ...types: T[]
): Extract<Message, { type: T }> {
  if (message.type === 'error') {
    const code = message.error.code ?? ProtocolErrorCode.ProtocolViolation;
    throw new RjobError(code, message.error.message, { details: { fromPeer: true } });
  }
  if (!(types as string[]).includes(message.type)) {
    throw new RjobError(
      ProtocolErrorCode.ProtocolViolation,
      `Expected ${types.join(' or ')} during the handshake, got ${message.type}.`,
      { details: { type: message.type } },
    );
  }
  return message as Extract<Message, { type: T }>;
}

async function run<T>(reader: HandshakeReader, body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (error) {
    const coded = toRjobError(error, ProtocolErrorCode.ProtocolViolation);
    // An error message from the peer has already ended the link on its side; otherwise tell it.
    reader.fail(coded);
    throw coded;
  }
}

/** Client side: negotiates a version, opens or resumes the session and attaches its channel. */
export function clientHandshake(
  link: TransportChannel,
  options: ClientHandshakeOptions,
): Promise<ClientHandshakeResult> {
  const takeover = options.resume?.takeover === true;
  if (takeover && !options.channel.pristine) {
    // Checked before anything is sent: a channel with history would carry numbers the new epoch
    // does not know.
    const error = new RjobError(
      ErrorCode.InvalidArgument,
      'A takeover needs a channel that was never attached.',
    );
    link.close(error);
    return Promise.reject(error);
  }
  const reader = new HandshakeReader(link, options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS, [
    'opened',
    'resumed',
  ]);
  const versions = [...(options.versions ?? SUPPORTED_PROTOCOL_VERSIONS)];
  return run(reader, async () => {
    reader.send({
      type: 'hello',
      versions,
      ...(options.token === undefined ? {} : { token: options.token }),
      ...(options.software === undefined ? {} : { software: options.software }),
    });
    // Offering one version, the client knows the session request it will send: it goes right
    // after `hello` (one round trip less). Servers read handshake messages in order and queue
    // what arrives early (docs/protocol.md, section 4).
    const sessionRequest = (): Message =>
      options.resume
        ? {
            type: 'resume',
            sessionId: options.resume.sessionId,
            resumeSecret: options.resume.resumeSecret,
            lastSeq: takeover ? 0 : options.channel.receivedSeq,
            // Epoch 0 is left out, so that a session never taken over resumes as it always did.
            ...(takeover
              ? { takeover: true }
              : options.channel.epoch > 0
                ? { epoch: options.channel.epoch }
                : {}),
          }
        : {
            type: 'open',
            ...(options.host ? { host: true } : {}),
            ...(options.relay ? { relay: options.relay } : {}),
          };
    const pipelined = versions.length === 1;
    if (pipelined) reader.send(sessionRequest());
    const welcome = expectType(await reader.next(), 'welcome');
    if (!versions.includes(welcome.version)) {
      throw new RjobError(
        ProtocolErrorCode.ProtocolVersion,
        `Server chose version ${welcome.version}, not offered.`,
        {
          details: { version: welcome.version, versions },
        },
      );
    }
    if (options.resume) {
      const channel = options.channel;
      if (!pipelined) reader.send(sessionRequest());
      const resumed = expectType(await reader.next(true), 'resumed');
      if (resumed.sessionId !== options.resume.sessionId) {
        throw new RjobError(ProtocolErrorCode.ProtocolViolation, 'Server resumed another session.');
      }
      const epoch = resumed.epoch ?? 0;
      if (takeover) {
        // A server that replays instead of starting an epoch did not take the session over.
        if (epoch < 1 || resumed.lastSeq !== 0) {
          throw new RjobError(ProtocolErrorCode.ProtocolViolation, 'Server did not take the session over.', {
            details: { epoch, lastSeq: resumed.lastSeq },
          });
        }
        channel.joinEpoch(epoch);
      } else if (epoch !== channel.epoch) {
        throw new RjobError(
          ProtocolErrorCode.ProtocolViolation,
          `Server resumed epoch ${epoch}, the client is in epoch ${channel.epoch}.`,
          { details: { epoch, clientEpoch: channel.epoch } },
        );
      }
      reader.release();
      channel.attach(link, resumed.lastSeq);
      return {
        version: welcome.version,
        sessionId: resumed.sessionId,
        resumed: true,
        ...(welcome.software === undefined ? {} : { software: welcome.software }),
      };
    }
    if (!pipelined) reader.send(sessionRequest());
    const opened = expectType(await reader.next(true), 'opened');
    reader.release();
    options.channel.attach(link, 0);
    return {
      version: welcome.version,
      sessionId: opened.sessionId,
      resumeSecret: opened.resumeSecret,
      resumed: false,
      ...(welcome.software === undefined ? {} : { software: welcome.software }),
    };
  });
}

/** Server side: answers the handshake, finds or creates the session and attaches its channel. */
export function serverHandshake(
  link: TransportChannel,
  options: ServerHandshakeOptions,
): Promise<ServerHandshakeResult> {
  const reader = new HandshakeReader(link, options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS);
  const supported = options.versions ?? SUPPORTED_PROTOCOL_VERSIONS;
  return run(reader, async () => {
    const hello = expectType(await reader.next(), 'hello');
    const version = supported.find((v) => hello.versions.includes(v));
    if (version === undefined) {
      throw new RjobError(
        ProtocolErrorCode.ProtocolVersion,
        `No common protocol version: client speaks ${hello.versions.join(', ')}, server ${supported.join(', ')}.`,
        { details: { clientVersions: hello.versions, serverVersions: [...supported] } },
      );
    }
    const token = hello.token;
    try {
      await options.authenticate?.(token);
    } catch (error) {
      throw toRjobError(error, ProtocolErrorCode.Unauthorized, 'Identity refused.');
    }
    reader.send({
      type: 'welcome',
      version,
      ...(options.software === undefined ? {} : { software: options.software }),
    });
    const request = expectType(await reader.next(), 'open', 'resume');
    if (request.type === 'open') {
      const session = await options.open({
        token,
        version,
        host: request.host === true,
        ...(request.relay ? { relay: request.relay } : {}),
      });
      reader.send({ type: 'opened', sessionId: session.sessionId, resumeSecret: session.resumeSecret });
      reader.release();
      session.channel.attach(link, 0);
      return {
        version,
        sessionId: session.sessionId,
        token,
        resumed: false,
        takenOver: false,
        channel: session.channel,
      };
    }
    const takeover = request.takeover === true;
    const current = await options.resume({
      sessionId: request.sessionId,
      resumeSecret: request.resumeSecret,
      token,
      version,
      takeover,
    });
    if (takeover) {
      // Closes the old channel (and its link, telling the old client why) only now that the
      // secret has been checked; the successor starts empty, so both sides number from 1.
      const channel = current.takeOver();
      reader.send({ type: 'resumed', sessionId: request.sessionId, lastSeq: 0, epoch: channel.epoch });
      reader.release();
      channel.attach(link, 0);
      return { version, sessionId: request.sessionId, token, resumed: true, takenOver: true, channel };
    }
    const epoch = request.epoch ?? 0;
    if (epoch !== current.epoch) {
      // A client from before a takeover: its numbers belong to a channel that is gone. Refusing
      // leaves the current channel and its link alone.
      throw new RjobError(
        ProtocolErrorCode.SessionTakenOver,
        'The session was taken over by another client.',
        { details: { epoch, currentEpoch: current.epoch } },
      );
    }
    const channel = current;
    // The old link may not have noticed the cut yet; it must be gone before we say how far we got.
    channel.detach('Session resumed on another link.');
    reader.send({
      type: 'resumed',
      sessionId: request.sessionId,
      lastSeq: channel.receivedSeq,
      ...(channel.epoch > 0 ? { epoch: channel.epoch } : {}),
    });
    reader.release();
    channel.attach(link, request.lastSeq);
    return { version, sessionId: request.sessionId, token, resumed: true, takenOver: false, channel };
  });
}
