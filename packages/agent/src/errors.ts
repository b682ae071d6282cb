/**
 * Error codes the agent adds to @rjob/core's. Every error the agent raises is an `RjobError` from
 * core carrying one of these codes (or one of core's), so programs branch on `code`.
 */
import { RjobError } from '@rjob/core';

export const AgentErrorCode = {
  /** The agent died (or was restarted) while the job was running; its results may be incomplete. */
  AgentRestarted: 'ERR_AGENT_RESTARTED',
  /** The spool was closed; it takes no appends and serves no reads. */
  SpoolClosed: 'ERR_SPOOL_CLOSED',
  /** The spool was sealed (its job finished); it takes no more appends. */
  SpoolSealed: 'ERR_SPOOL_SEALED',
  /** A spool segment holds bytes that are not a valid entry where a complete one was expected. */
  SpoolCorrupt: 'ERR_SPOOL_CORRUPT',
  /** Reading or writing a spool's files failed (disk full, I/O error); the spool takes no more work. */
  SpoolIo: 'ERR_SPOOL_IO',
  /** A persisted job or session file cannot be decoded. */
  StoreCorrupt: 'ERR_STORE_CORRUPT',
  /**
   * A file of the agent's state (a job or session file, a spool's records or meta) was damaged on
   * disk: the damaged item was dropped (and reported), everything else was kept.
   */
  StateDamaged: 'ERR_STATE_DAMAGED',
  /** The disk (or the user's quota) holding the agent's state is full (ENOSPC, EDQUOT). */
  DiskFull: 'ERR_DISK_FULL',
  /** The state directory exists but is not a directory we own. */
  StateDirInsecure: 'ERR_STATE_DIR_INSECURE',
  /**
   * The state directory's lock is stale, but a start that was removing it died half way: the
   * message names the two files to remove.
   */
  StateLockStuck: 'ERR_STATE_LOCK_STUCK',
} as const;

export type AgentErrorCodeValue = (typeof AgentErrorCode)[keyof typeof AgentErrorCode];

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
