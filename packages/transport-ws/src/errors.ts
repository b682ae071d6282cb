/** The error codes of @rjob/transport-ws: see error-codes.ts. */
export { WS_UNREACHABLE_CODES, WsErrorCode, type WsErrorCodeValue } from './error-codes.js';
