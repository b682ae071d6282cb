/**
 * Error codes of the wire protocol and the remoting link. They travel in `error` messages, so they
 * are part of protocol v1: adding one is a minor change, renaming or removing one is breaking.
 * docs/protocol.md lists them with the behaviour each one triggers.
 */
import { RjobError, type RjobErrorOptions } from '../errors.js';

export const ProtocolErrorCode = {
  /** A frame's length header exceeds `maxFrameBytes` (checked before the body is buffered). */
  FrameTooLarge: 'ERR_FRAME_TOO_LARGE',
  /** A frame is structurally wrong (zero length, data after a fatal error). */
  FrameMalformed: 'ERR_FRAME_MALFORMED',
  /** The byte stream ended in the middle of a frame. */
  FrameTruncated: 'ERR_FRAME_TRUNCATED',
  /**
   * Buffering the rest of a partly received frame would take the receiver past its shared budget
   * for incomplete frames (all connections of an agent together): that connection is closed.
   */
  FrameBudget: 'ERR_FRAME_BUDGET',
  /** A frame body is not a valid protocol message: undecodable, wrong types, unknown `type`. */
  MessageInvalid: 'ERR_MESSAGE_INVALID',
  /** A valid message that is not allowed at this point of the conversation. */
  ProtocolViolation: 'ERR_PROTOCOL_VIOLATION',
  /** Client and server share no protocol version. */
  ProtocolVersion: 'ERR_PROTOCOL_VERSION',
  /** The handshake did not finish within `handshakeTimeoutMs`. */
  HandshakeTimeout: 'ERR_HANDSHAKE_TIMEOUT',
  /** A sequenced message arrived out of order (gap or repeat). */
  Sequence: 'ERR_SEQUENCE',
  /** The peer sent past the credit it was granted, or acked what was never sent. */
  FlowControl: 'ERR_FLOW_CONTROL',
  /** Nothing arrived from the peer within `heartbeatTimeoutMs`: the link is considered dead. */
  HeartbeatTimeout: 'ERR_HEARTBEAT_TIMEOUT',
  /** The peer asked to resume from a point this side can no longer replay. */
  ResumeFailed: 'ERR_RESUME_FAILED',
  /** No session with that id exists for this identity (or the resume secret is wrong). */
  SessionNotFound: 'ERR_SESSION_NOT_FOUND',
  /**
   * Another client took the session over (`resume` with `takeover`): the link of the client that
   * held it is closed with this code, and that client's later plain resumes are refused with it.
   */
  SessionTakenOver: 'ERR_SESSION_TAKEN_OVER',
  /** The underlying link closed or was cut. Resumable. */
  LinkClosed: 'ERR_LINK_CLOSED',
  /** The channel was closed; it carries nothing more. */
  ChannelClosed: 'ERR_CHANNEL_CLOSED',
  /** The peer rejected the identity token. */
  Unauthorized: 'ERR_UNAUTHORIZED',
  /** A request named a method the agent does not implement (an older agent, a typo). */
  UnknownMethod: 'ERR_UNKNOWN_METHOD',
} as const;

export type ProtocolErrorCodeValue = (typeof ProtocolErrorCode)[keyof typeof ProtocolErrorCode];

/** Shorthand used across the protocol code. */
export function protocolError(
  code: ProtocolErrorCodeValue,
  message: string,
  options?: RjobErrorOptions,
): RjobError {
  return new RjobError(code, message, options);
}
