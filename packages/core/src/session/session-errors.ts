/**
 * Error codes of the session client. Like the protocol codes they are stable: programs branch on
 * them (a fan-out summary tells unreachable hosts from failed work by code).
 */
import { ErrorCode, RjobError } from '../errors.js';
import { ProtocolErrorCode } from '../protocol/protocol-errors.js';

export const SessionErrorCode = {
  /** The target could not be reached or the handshake did not complete. */
  ConnectFailed: 'ERR_CONNECT_FAILED',
  /** The agent refused to resume the session (it is gone); the session is Broken. */
  SessionBroken: 'ERR_SESSION_BROKEN',
  /** The session was closed; it takes no more requests. */
  SessionClosed: 'ERR_SESSION_CLOSED',
  /** The verb needs an Opened session. */
  SessionNotOpened: 'ERR_SESSION_NOT_OPENED',
  /** A fan-out was stopped (its signal aborted) before this target's work finished. */
  Interrupted: 'ERR_INTERRUPTED',
  /**
   * The session is Disconnected and nothing is reconnecting it (the client disconnected on purpose,
   * or the reconnect window ran out): a request is refused at once instead of waiting.
   */
  SessionDisconnected: 'ERR_SESSION_DISCONNECTED',
  /**
   * `session.claim` of a session another client is attached to: it must be disconnected first
   * (as Connect-PSSession takes only a Disconnected session).
   */
  SessionInUse: 'ERR_SESSION_IN_USE',
} as const;

export type SessionErrorCodeValue = (typeof SessionErrorCode)[keyof typeof SessionErrorCode];

/**
 * Core's codes that mean "could not get there": no agent at the address, the connect or handshake
 * failed or timed out, the identity was refused. A transport's table has its own such set
 * (SSH_UNREACHABLE_CODES, WS_UNREACHABLE_CODES); `rjob` counts a host with one of them unreachable.
 */
export const UNREACHABLE_CODES: ReadonlySet<string> = new Set([
  ErrorCode.AgentUnreachable,
  SessionErrorCode.ConnectFailed,
  ProtocolErrorCode.HandshakeTimeout,
  ProtocolErrorCode.Unauthorized,
]);

/** Handshake refusals: trying again cannot help, so reconnecting stops at them. */
const FATAL_CODES: ReadonlySet<string> = new Set([
  ProtocolErrorCode.SessionNotFound,
  // Another client holds the session now; this one's numbers are from a closed epoch.
  ProtocolErrorCode.SessionTakenOver,
  ProtocolErrorCode.ResumeFailed,
  ProtocolErrorCode.Unauthorized,
  ProtocolErrorCode.ProtocolVersion,
  ProtocolErrorCode.ChannelClosed,
]);

/** Core's own link and frame codes say nothing about why a target was not reached. */
const GENERIC_CODES: ReadonlySet<string> = new Set(Object.values(ProtocolErrorCode));

/**
 * True when a connect or resume failure means the session can never be resumed: the agent refused
 * it. The session is Broken.
 */
export function isFatalConnectError(error: unknown): boolean {
  return RjobError.is(error) && FATAL_CODES.has(error.code);
}

/**
 * True when trying the same target again cannot help (a refused host key, a failed login, a
 * certificate pin mismatch): automatic reconnecting stops and the session stays Disconnected, with
 * this error as its reason, until the user fixes the cause and calls `connect()`. A transport marks
 * such errors with `details.permanent: true`.
 */
export function isPermanentConnectError(error: unknown): boolean {
  return RjobError.is(error) && error.details?.permanent === true;
}

/**
 * Codes a connect failure for callers: a transport's own coded {@link RjobError} (ERR_SSH_*,
 * ERR_WS_*, ...) and handshake refusals are kept as they are, so a fan-out summary can tell a
 * refused host key from an unreachable host; anything else (core's generic link codes included)
 * becomes ERR_CONNECT_FAILED with the cause attached.
 */
export function connectFailed(error: unknown, computerName: string): RjobError {
  if (RjobError.is(error) && (FATAL_CODES.has(error.code) || !GENERIC_CODES.has(error.code))) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new RjobError(SessionErrorCode.ConnectFailed, `Cannot connect to ${computerName}: ${message}`, {
    cause: error,
    details: { computerName },
  });
}
