/** `agent.*`: the agent process itself, as the server's {@link AgentControl} describes it. */
import { agentInfo, agentStop } from '../agent-control.js';
import { afterAck, answer } from '../reply.js';
import { ANSWERED_LATER, type MethodTable } from './context.js';

export const agentMethods: MethodTable = {
  'agent.info': (scope, { params }) => agentInfo(scope.control, scope.identity, scope.id, params),
  'agent.stop': (scope, { params, requestId, channel }) => {
    const { result, afterAnswer } = agentStop(scope.control, scope.identity, scope.id, params);
    const seq = answer(channel, requestId, { result });
    // The asking session is done: not kept for the next agent, as the others are.
    void afterAck(channel, seq)
      .then(() => scope.end('The agent is stopping.').catch(() => {}))
      .then(afterAnswer);
    return ANSWERED_LATER;
  },
};
