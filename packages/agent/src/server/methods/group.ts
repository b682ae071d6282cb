/** `group.*`: the agent's job groups (`rjob group`), checked and run by its JobQueue. */
import { groupCall } from '../job-queue.js';
import type { MethodHandler, MethodTable } from './context.js';

const group: MethodHandler = (scope, { method, params }) => groupCall(scope.queue, method, params);

export const groupMethods: MethodTable = {
  'group.list': group,
  'group.add': group,
  'group.set': group,
  'group.remove': group,
};
