import { AgentErrorCode } from '@rjob/agent/cli';
import { ErrorCode, ProtocolErrorCode, RjobError, UNREACHABLE_CODES } from '@rjob/core';
// The transports' code tables only (no dependencies): the transports themselves load when used.
import { SSH_UNREACHABLE_CODES } from '@rjob/transport-ssh/codes';
import { WS_UNREACHABLE_CODES } from '@rjob/transport-ws/codes';
import { CliErrorCode } from './error-codes.js';
import { CliError, ExitCode, type ExitCodeValue } from './io.js';

/** Codes that mean "the thing named does not exist". */
const NOT_FOUND = new Set<string>([
  ErrorCode.JobNotFound,
  ProtocolErrorCode.SessionNotFound,
  CliErrorCode.UnknownSession,
  AgentErrorCode.GroupNotFound,
]);

/** Codes that mean "refused": by the state of the job (or group), or another agent serves the directory. */
const REFUSED = new Set<string>([
  ErrorCode.JobRunning,
  ErrorCode.JobNotRunning,
  ErrorCode.StdinClosed,
  AgentErrorCode.GroupInUse,
  AgentErrorCode.AgentRunning,
]);

/**
 * Codes that mean "could not get there": the host, its port, its key or the login. Each package's
 * code table says which of its codes these are (core's UNREACHABLE_CODES and the transports').
 */
const UNREACHABLE = new Set<string>([
  ...UNREACHABLE_CODES,
  ...SSH_UNREACHABLE_CODES,
  ...WS_UNREACHABLE_CODES,
]);

/** True for a code that means the target could not be reached (exit 4, "unreachable" in a summary). */
export function isUnreachableCode(code: string): boolean {
  return UNREACHABLE.has(code);
}

/** The exit code and one-line message for any error that reaches the top of a command. */
export function describeError(error: unknown): { exitCode: ExitCodeValue; line: string } {
  if (error instanceof CliError)
    return { exitCode: error.exitCode, line: `${error.message} (${error.code})` };
  let code = RjobError.is(error) ? error.code : ((error as { code?: unknown })?.code as string | undefined);
  const message = oneLine(error instanceof Error ? error.message : String(error));
  // This process's own writes (its state file) on a full disk say so as the agent's do.
  if (code === 'ENOSPC' || code === 'EDQUOT') code = AgentErrorCode.DiskFull;
  if (typeof code !== 'string')
    return { exitCode: ExitCode.Internal, line: `${message} (${CliErrorCode.Internal})` };
  let exitCode: ExitCodeValue = ExitCode.Internal;
  if (NOT_FOUND.has(code)) exitCode = ExitCode.NotFound;
  else if (isUnreachableCode(code)) exitCode = ExitCode.Unreachable;
  else if (code === ErrorCode.InvalidArgument || code === ErrorCode.UnknownJobType) exitCode = ExitCode.Usage;
  else if (REFUSED.has(code)) exitCode = ExitCode.Refused;
  else if (code === AgentErrorCode.DiskFull) exitCode = ExitCode.DiskFull;
  return { exitCode, line: `${message} (${code})` };
}

/** Messages with several lines (ssh's host key warning) become one, so stderr stays one line per error. */
export function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}
