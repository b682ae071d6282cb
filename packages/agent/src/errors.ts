/** Helpers for the agent's errors; the codes are in error-codes.ts. */
import { RjobError } from '@rjob/core';

export { AgentErrorCode, type AgentErrorCodeValue } from './error-codes.js';
import { AgentErrorCode } from './error-codes.js';

/** The reason given to jobs that were unfinished when the agent died. */
export function agentRestartedError(): RjobError {
  return new RjobError(AgentErrorCode.AgentRestarted, 'agent restarted');
}

/** True for the errors a write gets when the disk or the user's quota is full. */
export function isSpaceError(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT' || code === AgentErrorCode.DiskFull;
}

/** ERR_DISK_FULL for a write that failed for space (`error` is the system error). */
export function diskFullError(what: string, error: unknown): RjobError {
  if (RjobError.hasCode(error, AgentErrorCode.DiskFull)) return error as RjobError;
  const code = (error as { code?: unknown } | undefined)?.code;
  return new RjobError(
    AgentErrorCode.DiskFull,
    `The disk is full: cannot write ${what} (${typeof code === 'string' ? code : 'ENOSPC'}). Free some space and retry.`,
    { cause: error },
  );
}
