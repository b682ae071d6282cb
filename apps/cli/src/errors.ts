import { ErrorCode, RjobError } from '@rjob/core';
import { CliError, ExitCode, type ExitCodeValue } from './io.js';

/** The agent's code for a full disk (see @rjob/agent's AgentErrorCode.DiskFull). */
const DISK_FULL = 'ERR_DISK_FULL';

/** Codes that mean "the thing named does not exist". */
const NOT_FOUND = new Set<string>([ErrorCode.JobNotFound, 'ERR_SESSION_NOT_FOUND', 'ERR_UNKNOWN_SESSION']);

/** Codes that mean "could not get there": the host, its port, its key or the login. */
export function isUnreachableCode(code: string): boolean {
  return (
    code === ErrorCode.AgentUnreachable ||
    code === 'ERR_CONNECT_FAILED' ||
    code.startsWith('ERR_SSH_') ||
    code.startsWith('ERR_WS_') ||
    code === 'ERR_HANDSHAKE_TIMEOUT' ||
    code === 'ERR_UNAUTHORIZED'
  );
}

/** The exit code and one-line message for any error that reaches the top of a command. */
export function describeError(error: unknown): { exitCode: ExitCodeValue; line: string } {
  if (error instanceof CliError)
    return { exitCode: error.exitCode, line: `${error.message} (${error.code})` };
  let code = RjobError.is(error) ? error.code : ((error as { code?: unknown })?.code as string | undefined);
  const message = oneLine(error instanceof Error ? error.message : String(error));
  // This process's own writes (its state file) on a full disk say so as the agent's do.
  if (code === 'ENOSPC' || code === 'EDQUOT') code = DISK_FULL;
  if (typeof code !== 'string') return { exitCode: ExitCode.Internal, line: `${message} (ERR_INTERNAL)` };
  let exitCode: ExitCodeValue = ExitCode.Internal;
  if (NOT_FOUND.has(code)) exitCode = ExitCode.NotFound;
  else if (isUnreachableCode(code)) exitCode = ExitCode.Unreachable;
  else if (code === ErrorCode.InvalidArgument || code === ErrorCode.UnknownJobType) exitCode = ExitCode.Usage;
  else if (code === ErrorCode.JobRunning || code === 'ERR_AGENT_RUNNING') exitCode = ExitCode.Refused;
  else if (code === DISK_FULL) exitCode = ExitCode.DiskFull;
  return { exitCode, line: `${message} (${code})` };
}

/** Messages with several lines (ssh's host key warning) become one, so stderr stays one line per error. */
export function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}
