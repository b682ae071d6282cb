/**
 * The per-link handshake of protocol v1: version negotiation (`hello` / `welcome`), then opening a
 * new session (`open` / `opened`) or resuming one (`resume` / `resumed`), after which the link is
 * handed to the session's {@link ReliableChannel}. Each side learns how far the other got, which
 * is what lets the channel replay exactly the missing messages.
 */
import { RjobError, serializeError, toRjobError } from '../errors.js';
import type { TransportChannel } from '../transport/transport.js';
import { decodeMessage, encodeMessage, type Message, SUPPORTED_PROTOCOL_VERSIONS } from './messages.js';
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
  /** Resume this session instead of opening a new one. */
  resume?: { sessionId: string; resumeSecret: string };
}

export interface ClientHandshakeResult {
  version: number;
  sessionId: string;
  /** Present when a session was opened (the secret to keep for resuming it). */
  resumeSecret?: string;
  resumed: boolean;
}

export interface ServerHandshakeOptions extends HandshakeCommon {
  /** Checks the identity token; throw (ERR_UNAUTHORIZED) to refuse. */
  authenticate?(token: string | undefined): void | Promise<void>;
  /** Creates a session and its channel. */
  open(context: { token: string | undefined; version: number }): SessionHandle | Promise<SessionHandle>;
  /**
   * Finds the session to resume and checks its secret (in constant time). Throw
   * ERR_SESSION_NOT_FOUND for an unknown id, a wrong secret or another identity's session, so the
   * answer does not tell them apart.
   */
  resume(request: {
    sessionId: string;
    resumeSecret: string;
    token: string | undefined;
    version: number;
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
  const reader = new HandshakeReader(link, options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS);
  const versions = [...(options.versions ?? SUPPORTED_PROTOCOL_VERSIONS)];
  return run(reader, async () => {
    reader.send({
      type: 'hello',
      versions,
      ...(options.token === undefined ? {} : { token: options.token }),
      ...(options.software === undefined ? {} : { software: options.software }),
    });
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
      reader.send({
        type: 'resume',
        sessionId: options.resume.sessionId,
        resumeSecret: options.resume.resumeSecret,
        lastSeq: options.channel.receivedSeq,
      });
      const resumed = expectType(await reader.next(true), 'resumed');
      if (resumed.sessionId !== options.resume.sessionId) {
        throw new RjobError(ProtocolErrorCode.ProtocolViolation, 'Server resumed another session.');
      }
      reader.release();
      options.channel.attach(link, resumed.lastSeq);
      return { version: welcome.version, sessionId: resumed.sessionId, resumed: true };
    }
    reader.send({ type: 'open' });
    const opened = expectType(await reader.next(true), 'opened');
    reader.release();
    options.channel.attach(link, 0);
    return {
      version: welcome.version,
      sessionId: opened.sessionId,
      resumeSecret: opened.resumeSecret,
      resumed: false,
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
      const session = await options.open({ token, version });
      reader.send({ type: 'opened', sessionId: session.sessionId, resumeSecret: session.resumeSecret });
      reader.release();
      session.channel.attach(link, 0);
      return { version, sessionId: session.sessionId, token, resumed: false, channel: session.channel };
    }
    const channel = await options.resume({
      sessionId: request.sessionId,
      resumeSecret: request.resumeSecret,
      token,
      version,
    });
    // The old link may not have noticed the cut yet; it must be gone before we say how far we got.
    channel.detach('Session resumed on another link.');
    reader.send({ type: 'resumed', sessionId: request.sessionId, lastSeq: channel.receivedSeq });
    reader.release();
    channel.attach(link, request.lastSeq);
    return { version, sessionId: request.sessionId, token, resumed: true, channel };
  });
}
