/** What JobManager.restore needs to put jobs back as they were: their ids and their times. */
import { ErrorCode, RjobError } from '../errors.js';
import type { RestoredIdentity } from './job-manager-options.js';

/**
 * The next id to hand out once `identities` are restored, from `next` before: ids are never
 * reused, so each must be above every id handed out so far (ERR_INVALID_ARGUMENT otherwise).
 */
export function reserveIds(next: number, identities: RestoredIdentity[]): number {
  let after = next;
  for (const { id } of identities) {
    if (!Number.isSafeInteger(id) || id < after) {
      throw new RjobError(
        ErrorCode.InvalidArgument,
        `Job id ${id} cannot be restored: ids are never reused.`,
        {
          details: { id, nextId: after },
        },
      );
    }
    after = id + 1;
  }
  return after;
}

/** A restored job's stored times, as Job's init takes them. */
export function restoredTimes(restored?: RestoredIdentity): { beginTime?: Date; endTime?: Date } {
  return {
    ...(restored?.beginTime ? { beginTime: restored.beginTime } : {}),
    ...(restored?.endTime ? { endTime: restored.endTime } : {}),
  };
}
