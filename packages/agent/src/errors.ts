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
  /** The state directory exists but is not a directory we own. */
  StateDirInsecure: 'ERR_STATE_DIR_INSECURE',
} as const;

export type AgentErrorCodeValue = (typeof AgentErrorCode)[keyof typeof AgentErrorCode];

/** The reason given to jobs that were unfinished when the agent died. */
export function agentRestartedError(): RjobError {
  return new RjobError(AgentErrorCode.AgentRestarted, 'agent restarted');
}
