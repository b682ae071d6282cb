/**
 * `@rjob/core/protocol`: the wire protocol's pieces, for those who implement a peer or a link
 * (the agent, transports, relays): framing, the messages and their codec, the handshake, the
 * reliable channel, and the session's method and event tables. A library user opening sessions
 * needs none of it (`openSession`, `Session` and the transport contract are in `@rjob/core`).
 * docs/protocol.md is the specification these implement.
 */
export {
  assertFrameSize,
  DEFAULT_FRAME_BUDGET_BYTES,
  DEFAULT_MAX_FRAME_BYTES,
  encodeFrame,
  FRAME_HEADER_BYTES,
  FrameBudget,
  FrameDecoder,
  type FramingOptions,
} from './framing.js';
export {
  type ClientHandshakeOptions,
  type ClientHandshakeResult,
  clientHandshake,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  type ServerHandshakeOptions,
  type ServerHandshakeResult,
  type SessionHandle,
  serverHandshake,
} from './handshake.js';
export {
  type AckMessage,
  type CloseMessage,
  type ControlMessage,
  type CreditMessage,
  decodeMessage,
  type ErrorMessage,
  type EventMessage,
  encodeMessage,
  type HandshakeMessage,
  type HelloMessage,
  isSequenced,
  MESSAGE_LIMITS,
  type Message,
  type MessageType,
  type OpenedMessage,
  type OpenMessage,
  PROTOCOL_VERSION,
  type Payload,
  type PingMessage,
  type PongMessage,
  type RelayRequest,
  type RequestMessage,
  type ResponseMessage,
  type ResumedMessage,
  type ResumeMessage,
  SUPPORTED_PROTOCOL_VERSIONS,
  type SequencedMessage,
  validateMessage,
  type WelcomeMessage,
} from './messages.js';
export { protocolError } from './protocol-errors.js';
export {
  type MessageHandler,
  ReliableChannel,
  type ReliableChannelOptions,
  type ReliableChannelState,
  type ReliableChannelStats,
  type TakeoverEvent,
} from './reliable-channel.js';
export type {
  HostedOpenRequest,
  MethodParams,
  MethodResult,
  PackedRecordRuns,
  SessionEvent,
  SessionEvents,
  SessionMethod,
  SessionMethods,
} from '../session/rpc.js';
