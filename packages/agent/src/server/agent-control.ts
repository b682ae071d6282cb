/**
 * `agent.info` and `agent.stop`: what a client (`rjob agent status|stop -c HOST`) may ask about
 * the agent process itself. Read-only facts of the daemon, and a clean stop (as on SIGTERM) for
 * the daemon's own user: every link of a daemon is that user (the socket is 0600).
 */
import { type AgentPluginInfo, type AgentProcessInfo, RjobError } from '@rjob/core';
import { AgentErrorCode } from '../error-codes.js';
import { invalidParams, isPlainObject } from './wire.js';

/** `agent.info`'s answer (core's AgentProcessInfo), with the plugin lists an agent always gives. */
export type AgentInfo = AgentProcessInfo & AgentPluginInfo;

/** What the server tells a session about the agent, per identity. */
export interface AgentControl {
  info(identity: string, askingSessionId: string): AgentInfo;
  /** Set by a daemon that can be stopped by a client; called after the answer was acknowledged. */
  stop?: () => void;
}

/** Agent methods take no parameters: absent, null or `{}`. */
function noParams(params: unknown, method: string): void {
  if (params === undefined || params === null) return;
  if (!isPlainObject(params) || Object.keys(params).length > 0) {
    throw invalidParams(`${method} takes no parameters.`);
  }
}

export function agentInfo(
  control: AgentControl,
  identity: string,
  askingSessionId: string,
  params: unknown,
): AgentInfo {
  noParams(params, 'agent.info');
  return control.info(identity, askingSessionId);
}

/**
 * Checks an `agent.stop` request and gives its answer and what to run once the client has it.
 * An agent embedded in another program (no `stop` hook) refuses with ERR_AGENT_STOP_UNSUPPORTED.
 */
export function agentStop(
  control: AgentControl,
  identity: string,
  askingSessionId: string,
  params: unknown,
): { result: AgentInfo; afterAnswer: () => void } {
  noParams(params, 'agent.stop');
  const stop = control.stop;
  if (!stop) {
    throw new RjobError(
      AgentErrorCode.StopUnsupported,
      'This agent is not a daemon a client can stop (it runs inside another program).',
    );
  }
  return { result: control.info(identity, askingSessionId), afterAnswer: stop };
}
