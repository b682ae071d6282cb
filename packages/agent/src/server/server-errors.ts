/**
 * Deprecated name, kept so code written against it still compiles: the agent's codes are in one
 * table, `AgentErrorCode` (../error-codes.ts); the session and method codes are core's.
 */
import { ProtocolErrorCode, SessionErrorCode } from '@rjob/core';
import { AgentErrorCode } from '../error-codes.js';

/** @deprecated Use `AgentErrorCode`, `SessionErrorCode.SessionClosed`, `ProtocolErrorCode.UnknownMethod`. */
export const ServerErrorCode = {
  ...AgentErrorCode,
  SessionClosed: SessionErrorCode.SessionClosed,
  UnknownMethod: ProtocolErrorCode.UnknownMethod,
} as const;
