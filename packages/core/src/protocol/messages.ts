/**
 * Protocol v1 messages: a discriminated union on `type`, the body encoding (V8 serialization, see
 * docs/decisions.md "Protocol body encoding") and hand-written validators. Nothing decoded from
 * the wire is used before {@link validateMessage} has accepted it.
 */
import v8 from 'node:v8';
import { ErrorCode, RjobError, type SerializedError } from '../errors.js';
import { ProtocolErrorCode } from './protocol-errors.js';

/** The protocol version this code speaks. */
export const PROTOCOL_VERSION = 1;
/** Every version this code can speak, most preferred first. */
export const SUPPORTED_PROTOCOL_VERSIONS: readonly number[] = [PROTOCOL_VERSION];

/** Limits on fields, so a peer cannot make us hold huge strings outside of payloads. */
export const MESSAGE_LIMITS = {
  maxVersions: 16,
  maxTokenChars: 8192,
  maxIdChars: 256,
  maxNameChars: 256,
  maxReasonChars: 4096,
  maxErrorDepth: 8,
} as const;

// ---- link-level messages (never sequenced, never replayed) -----------------------------------

/** Client → server, first message on every link. */
export interface HelloMessage {
  type: 'hello';
  /** Protocol versions the client speaks, most preferred first. */
  versions: number[];
  /** Identity token. Opaque to the protocol; the agent decides what it accepts. */
  token?: string;
  /** Free text naming the client software, for logs. */
  software?: string;
}

/** Server → client, answer to `hello`. */
export interface WelcomeMessage {
  type: 'welcome';
  /** The version chosen for this link; one of `hello.versions`. */
  version: number;
  software?: string;
}

/** Client → server after `welcome`: start a new session. */
export interface OpenMessage {
  type: 'open';
  /**
   * Open a session on the identity's job host: the session's job table is the one every `host`
   * session of that identity shares (the user's local jobs), which never expires by idle time.
   * The session itself is the client's own (its channel, subscriptions, resume secret); closing it
   * leaves the host's jobs as they are. Absent means false: a session with a job table of its own.
   */
  host?: boolean;
  /**
   * Open a relay to a session the agent holds for the client (`rjob session new`; see the
   * `hosted.*` methods) instead of a session of its own: every request goes on to that session
   * over the agent's open connection, and the events of the relay's subscriptions come back. The
   * agent connects the held session first when it is not (with these credentials). Ends with
   * the link; the held session stays.
   */
  relay?: RelayRequest;
}

/** A session the agent is to hold, as a client names it: where, which, and how to reach it. */
export interface RelayRequest {
  /** Where the session lives, as the user wrote it (an alias, `user@host:port`, a URL). */
  target: string;
  sessionId: string;
  resumeSecret: string;
  /** The name the client knows it by (shown in messages). */
  name?: string;
  /** The client's settings for reaching the target (its `RJOB_*`, `HOME`, `SSH_AUTH_SOCK`). */
  env?: Record<string, string>;
  cwd?: string;
  connectTimeoutMs?: number;
}

/** Client → server after `welcome`: reattach to an existing session. */
export interface ResumeMessage {
  type: 'resume';
  sessionId: string;
  resumeSecret: string;
  /** Highest sequence number the client has received from the server in this session. */
  lastSeq: number;
  /**
   * The channel epoch the client's state belongs to (from the last `resumed`); absent means 0.
   * A resume from an epoch the session has left (it was taken over since) is refused.
   */
  epoch?: number;
  /**
   * The client holds none of the session's channel state (a new process with only the id and
   * secret): the server starts a new epoch instead of replaying. Requires `lastSeq` 0.
   */
  takeover?: boolean;
}

/** Server → client, answer to `open`. */
export interface OpenedMessage {
  type: 'opened';
  sessionId: string;
  /** Secret the client must present to resume; only ever sent here. */
  resumeSecret: string;
}

/** Server → client, answer to `resume`. */
export interface ResumedMessage {
  type: 'resumed';
  sessionId: string;
  /** Highest sequence number the server has received from the client in this session. */
  lastSeq: number;
  /** The session's channel epoch; absent means 0. Always present after a takeover (≥ 1). */
  epoch?: number;
}

/** Cumulative acknowledgement: every sequenced message up to `seq` has been consumed. */
export interface AckMessage {
  type: 'ack';
  seq: number;
}

/**
 * Cumulative credit grant: the peer may send sequenced messages with sequence numbers up to `seq`,
 * as long as each one starts before byte offset `bytes` of the sequenced stream.
 */
export interface CreditMessage {
  type: 'credit';
  seq: number;
  bytes: number;
}

export interface PingMessage {
  type: 'ping';
  nonce: number;
}

export interface PongMessage {
  type: 'pong';
  /** The `nonce` of the ping answered. */
  nonce: number;
}

/** A fatal error; the sender closes the link right after it. */
export interface ErrorMessage {
  type: 'error';
  error: SerializedError;
}

/** Orderly end of the session; nothing follows and it cannot be resumed. */
export interface CloseMessage {
  type: 'close';
  reason?: string;
}

// ---- sequenced messages (numbered, acked, replayed on resume) --------------------------------

export interface RequestMessage {
  type: 'request';
  seq: number;
  /** Chosen by the requester, unique among its requests in flight. */
  id: number;
  method: string;
  params?: unknown;
}

/** Answer to a request: `error` set means it failed, otherwise `result` (possibly undefined). */
export interface ResponseMessage {
  type: 'response';
  seq: number;
  /** The `id` of the request answered. */
  id: number;
  result?: unknown;
  error?: SerializedError;
}

/** Something that happened: a job record, a job state change, ... */
export interface EventMessage {
  type: 'event';
  seq: number;
  /** What kind of event, e.g. `job.packed`, `job.state`. */
  name: string;
  data?: unknown;
}

export type HandshakeMessage =
  | HelloMessage
  | WelcomeMessage
  | OpenMessage
  | ResumeMessage
  | OpenedMessage
  | ResumedMessage;
export type ControlMessage =
  | AckMessage
  | CreditMessage
  | PingMessage
  | PongMessage
  | ErrorMessage
  | CloseMessage;
export type SequencedMessage = RequestMessage | ResponseMessage | EventMessage;
export type Message = HandshakeMessage | ControlMessage | SequencedMessage;
export type MessageType = Message['type'];

/** A sequenced message before the channel numbers it. */
export type Payload = Omit<RequestMessage, 'seq'> | Omit<ResponseMessage, 'seq'> | Omit<EventMessage, 'seq'>;

const SEQUENCED_TYPES: ReadonlySet<string> = new Set(['request', 'response', 'event']);

export function isSequenced(message: Message): message is SequencedMessage {
  return SEQUENCED_TYPES.has(message.type);
}

// ---- encoding --------------------------------------------------------------------------------

/**
 * Encodes a message body with V8 serialization (structured-clone fidelity for user values: Date,
 * Map, Set, BigInt, typed arrays, Error, cycles). Does not validate; senders build messages from
 * typed code. Throws ERR_VALUE_NOT_CLONEABLE for functions, symbols and the like.
 */
export function encodeMessage(message: Message): Uint8Array {
  try {
    return v8.serialize(message);
  } catch (error) {
    throw new RjobError(
      ErrorCode.ValueNotCloneable,
      `Message cannot be serialized: ${(error as Error).message}`,
      { cause: error, details: { type: message.type } },
    );
  }
}

/** Decodes and validates one frame body. Throws ERR_MESSAGE_INVALID for anything not a message. */
export function decodeMessage(body: Uint8Array): Message {
  let value: unknown;
  try {
    value = v8.deserialize(body);
  } catch (error) {
    throw new RjobError(ProtocolErrorCode.MessageInvalid, 'Frame body is not decodable.', {
      cause: error,
      details: { frameBytes: body.byteLength },
    });
  }
  return validateMessage(value);
}

// ---- validation ------------------------------------------------------------------------------

class Invalid extends Error {}

function fail(message: string): never {
  throw new Invalid(message);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function field(obj: Record<string, unknown>, key: string): unknown {
  return Object.hasOwn(obj, key) ? obj[key] : undefined;
}

function str(obj: Record<string, unknown>, key: string, maxChars: number, optional = false): void {
  const value = field(obj, key);
  if (value === undefined && optional) return;
  if (typeof value !== 'string') fail(`${key} must be a string`);
  if (value.length > maxChars) fail(`${key} is longer than ${maxChars} characters`);
}

function nonEmptyStr(obj: Record<string, unknown>, key: string, maxChars: number): void {
  str(obj, key, maxChars);
  if ((obj[key] as string).length === 0) fail(`${key} must not be empty`);
}

/** A non-negative safe integer, at least `min`. */
function int(obj: Record<string, unknown>, key: string, min = 0): void {
  const value = field(obj, key);
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) fail(`${key} must be an integer`);
  if (value < min) fail(`${key} must be at least ${min}`);
}

function serializedError(value: unknown, depth: number): void {
  if (depth > MESSAGE_LIMITS.maxErrorDepth) fail('error causes nest too deep');
  if (!isPlainObject(value)) fail('error must be an object');
  str(value, 'name', MESSAGE_LIMITS.maxNameChars);
  if (typeof field(value, 'message') !== 'string') fail('error.message must be a string');
  str(value, 'code', MESSAGE_LIMITS.maxNameChars, true);
  if (field(value, 'stack') !== undefined && typeof value.stack !== 'string')
    fail('error.stack must be a string');
  if (field(value, 'exitCode') !== undefined && typeof value.exitCode !== 'number') fail('error.exitCode');
  str(value, 'signal', MESSAGE_LIMITS.maxNameChars, true);
  if (field(value, 'timedOut') !== undefined && typeof value.timedOut !== 'boolean') fail('error.timedOut');
  if (field(value, 'details') !== undefined && !isPlainObject(value.details))
    fail('error.details must be an object');
  if (field(value, 'cause') !== undefined) serializedError(value.cause, depth + 1);
}

const VALIDATORS: Record<MessageType, (m: Record<string, unknown>) => void> = {
  hello(m) {
    const versions = field(m, 'versions');
    if (!Array.isArray(versions) || versions.length === 0 || versions.length > MESSAGE_LIMITS.maxVersions) {
      fail(`versions must be an array of 1 to ${MESSAGE_LIMITS.maxVersions} versions`);
    }
    for (const v of versions)
      if (!Number.isSafeInteger(v) || v < 1) fail('each version must be a positive integer');
    str(m, 'token', MESSAGE_LIMITS.maxTokenChars, true);
    str(m, 'software', MESSAGE_LIMITS.maxNameChars, true);
  },
  welcome(m) {
    int(m, 'version', 1);
    str(m, 'software', MESSAGE_LIMITS.maxNameChars, true);
  },
  open(m) {
    const host = field(m, 'host');
    if (host !== undefined && typeof host !== 'boolean') fail('host must be a boolean');
    const relay = field(m, 'relay');
    if (relay !== undefined) {
      if (!isPlainObject(relay)) fail('relay must be an object');
      nonEmptyStr(relay, 'target', MESSAGE_LIMITS.maxTokenChars);
      nonEmptyStr(relay, 'sessionId', MESSAGE_LIMITS.maxIdChars);
      nonEmptyStr(relay, 'resumeSecret', MESSAGE_LIMITS.maxIdChars);
      str(relay, 'name', MESSAGE_LIMITS.maxNameChars, true);
      str(relay, 'cwd', MESSAGE_LIMITS.maxTokenChars, true);
      const timeout = field(relay, 'connectTimeoutMs');
      if (timeout !== undefined && !(typeof timeout === 'number' && timeout > 0)) {
        fail('relay.connectTimeoutMs must be a number above zero');
      }
      const env = field(relay, 'env');
      if (
        env !== undefined &&
        (!isPlainObject(env) ||
          Object.keys(env).length > 256 ||
          !Object.values(env).every((v) => typeof v === 'string' && v.length <= MESSAGE_LIMITS.maxTokenChars))
      ) {
        fail('relay.env must map at most 256 names to text');
      }
    }
  },
  resume(m) {
    nonEmptyStr(m, 'sessionId', MESSAGE_LIMITS.maxIdChars);
    nonEmptyStr(m, 'resumeSecret', MESSAGE_LIMITS.maxIdChars);
    int(m, 'lastSeq');
    if (field(m, 'epoch') !== undefined) int(m, 'epoch');
    const takeover = field(m, 'takeover');
    if (takeover !== undefined && typeof takeover !== 'boolean') fail('takeover must be a boolean');
    // A client taking over holds nothing; any other lastSeq means it is confused about its state.
    if (takeover === true && m.lastSeq !== 0) fail('takeover requires lastSeq 0');
  },
  opened(m) {
    nonEmptyStr(m, 'sessionId', MESSAGE_LIMITS.maxIdChars);
    nonEmptyStr(m, 'resumeSecret', MESSAGE_LIMITS.maxIdChars);
  },
  resumed(m) {
    nonEmptyStr(m, 'sessionId', MESSAGE_LIMITS.maxIdChars);
    int(m, 'lastSeq');
    if (field(m, 'epoch') !== undefined) int(m, 'epoch');
  },
  ack(m) {
    int(m, 'seq');
  },
  credit(m) {
    int(m, 'seq');
    int(m, 'bytes');
  },
  ping(m) {
    int(m, 'nonce');
  },
  pong(m) {
    int(m, 'nonce');
  },
  error(m) {
    serializedError(field(m, 'error'), 0);
  },
  close(m) {
    str(m, 'reason', MESSAGE_LIMITS.maxReasonChars, true);
  },
  request(m) {
    int(m, 'seq', 1);
    int(m, 'id');
    nonEmptyStr(m, 'method', MESSAGE_LIMITS.maxNameChars);
  },
  response(m) {
    int(m, 'seq', 1);
    int(m, 'id');
    if (field(m, 'error') !== undefined) serializedError(m.error, 0);
  },
  event(m) {
    int(m, 'seq', 1);
    nonEmptyStr(m, 'name', MESSAGE_LIMITS.maxNameChars);
  },
};

/**
 * Checks that a decoded value is a protocol v1 message and returns it typed. Unknown extra fields
 * are allowed (later v1 revisions may add optional ones); anything else wrong throws
 * ERR_MESSAGE_INVALID with `details.reason`.
 */
export function validateMessage(value: unknown): Message {
  try {
    if (!isPlainObject(value)) fail('message must be a plain object');
    const type = field(value, 'type');
    if (typeof type !== 'string' || !Object.hasOwn(VALIDATORS, type))
      fail(`unknown message type ${String(type)}`);
    VALIDATORS[type as MessageType](value);
    return value as unknown as Message;
  } catch (error) {
    if (!(error instanceof Invalid)) throw error;
    const type = isPlainObject(value) && typeof value.type === 'string' ? value.type.slice(0, 64) : undefined;
    throw new RjobError(ProtocolErrorCode.MessageInvalid, `Invalid message: ${error.message}.`, {
      details: { reason: error.message, ...(type === undefined ? {} : { type }) },
    });
  }
}
