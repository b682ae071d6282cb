/**
 * Brings a persisted job back into a session's JobManager after an agent restart: a job type
 * whose "work" is only to report the stored outcome at once. The job keeps its name, type and
 * command (and its id, see AgentSession.restoreJobs); its records are read from its spool.
 */
import { defineJobType, deserializeError, type JobOutcome, type JobType, RjobError } from '@rjob/core';
import { agentRestartedError } from '../errors.js';
import type { StoredJob } from '../store/job-store.js';

export function restoredJobType(stored: StoredJob): JobType {
  return defineJobType<StoredJob>({
    name: stored.type,
    describe: () => stored.command,
    start(_definition, context) {
      context.running();
      context.finish(outcomeOf(stored));
      return { stop() {} };
    },
  });
}

function outcomeOf(stored: StoredJob): JobOutcome {
  if (stored.state === 'Completed') return { state: 'Completed' };
  if (stored.state === 'Stopped') return { state: 'Stopped' };
  // The store turns anything unfinished into Failed ("agent restarted"); keep that reason.
  const revived = stored.reason ? deserializeError(stored.reason) : agentRestartedError();
  return { state: 'Failed', reason: RjobError.is(revived) ? revived : agentRestartedError() };
}
