import { RjobError } from '@rjob/core';

import { SshErrorCode } from './error-codes.js';

export { SshErrorCode, type SshErrorCodeValue, SSH_UNREACHABLE_CODES } from './error-codes.js';

/** Shape of the errors ssh2 and `net` raise; only the fields we branch on. */
interface LowLevelError {
  code?: unknown;
  level?: unknown;
  message?: unknown;
}

/**
 * Maps an error from ssh2 (or the socket under it) to a coded {@link RjobError}. Errors that are
 * already RjobErrors (for example a host-key refusal raised by our verifier) pass through.
 */
export function toSshConnectError(error: unknown, target: { host: string; port: number }): RjobError {
  if (RjobError.is(error)) return error;
  const e = (typeof error === 'object' && error !== null ? error : {}) as LowLevelError;
  const where = `${target.host}:${target.port}`;
  const message = typeof e.message === 'string' ? e.message : String(error);
  const details = { host: target.host, port: target.port, cause: e.code ?? e.level };
  if (e.code === 'ECONNREFUSED') {
    return new RjobError(SshErrorCode.ConnectRefused, `ssh: connect to ${where}: connection refused`, {
      cause: error,
      details,
    });
  }
  if (e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN' || e.code === 'EAI_NONAME') {
    return new RjobError(SshErrorCode.DnsFailed, `ssh: could not resolve host name ${target.host}`, {
      cause: error,
      details,
    });
  }
  if (e.level === 'client-timeout' || e.code === 'ETIMEDOUT') {
    return new RjobError(SshErrorCode.ConnectTimeout, `ssh: connect to ${where}: timed out`, {
      cause: error,
      details,
      timedOut: true,
    });
  }
  if (e.level === 'client-authentication') {
    return new RjobError(
      SshErrorCode.AuthFailed,
      `ssh: ${where}: permission denied (all authentication methods failed)`,
      // The same key offered again is refused again: the session client stops retrying.
      { cause: error, details: { ...details, permanent: true } },
    );
  }
  return new RjobError(SshErrorCode.ConnectFailed, `ssh: ${where}: ${message}`, { cause: error, details });
}
