/**
 * `@rjob/core/errors`: every error code of core, in its three tables (the job model's `ErrorCode`,
 * the wire protocol's `ProtocolErrorCode`, the session client's `SessionErrorCode`), with
 * `RjobError` and the set of codes that mean "could not get there". Light: nothing else of core
 * is loaded, so a quick command can name codes.
 */
export { ErrorCode, type ErrorCodeValue, RjobError, type RjobErrorOptions } from './errors.js';
export { ProtocolErrorCode, type ProtocolErrorCodeValue } from './protocol/protocol-errors.js';
export { SessionErrorCode, type SessionErrorCodeValue, UNREACHABLE_CODES } from './session/session-errors.js';
