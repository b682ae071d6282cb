/**
 * The agent's RPC: every method a session answers, by name. A new method family is one module
 * beside this one, with its table joined here.
 */
import { agentMethods } from './agent.js';
import type { MethodHandler } from './context.js';
import { groupMethods } from './group.js';
import { jobControlMethods } from './job-control.js';
import { jobReceiveMethods } from './job-receive.js';
import { jobStartMethods } from './job-start.js';
import { sessionMethods } from './session.js';
import { subscriptionMethods } from './subscription.js';

export { ANSWERED_LATER, type MethodCall, type MethodHandler, type SessionScope } from './context.js';

/** A Map, not an object: a method named like an Object.prototype member must stay unknown. */
export const METHODS: ReadonlyMap<string, MethodHandler> = new Map(
  Object.entries({
    ...sessionMethods,
    ...jobStartMethods,
    ...jobControlMethods,
    ...jobReceiveMethods,
    ...groupMethods,
    ...subscriptionMethods,
    ...agentMethods,
  }),
);
