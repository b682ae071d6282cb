/**
 * `job.subscribe`, `job.ack`, `job.unsubscribe` and `invoke`: records streamed to the client by
 * the subscription pump (subscription-pump.ts).
 */
import type { Job, JobInfo } from '@rjob/core';
import { pump, type Subscription } from '../subscription-pump.js';
import {
  invalidParams,
  isPlainObject,
  objectParams,
  optionalBoolean,
  requiredString,
  wireSelector,
} from '../wire.js';
import type { MethodCall, MethodTable, SessionScope } from './context.js';
import { startWork } from './job-start.js';

export const subscriptionMethods: MethodTable = {
  'job.subscribe': subscribe,
  'job.ack': (scope, { params }) => ack(scope, params),
  'job.unsubscribe': (scope, { method, params }) => {
    const p = objectParams(params, method);
    scope.subscriptions.cancel(requiredString(p, 'subscriptionId'));
    return undefined;
  },
  invoke,
};

function subscribe(scope: SessionScope, { params, channel }: MethodCall): JobInfo[] {
  const p = objectParams(params, 'job.subscribe');
  const subscriptionId = requiredString(p, 'subscriptionId');
  const keep = optionalBoolean(p, 'keep') ?? false;
  const follow = optionalBoolean(p, 'follow') ?? true;
  const jobs = scope.select(wireSelector(p.selector));
  const subscription = newSubscription(scope, subscriptionId, p);
  // After the response, so the client has the answer before the first record.
  queueMicrotask(() => void pump(scope, subscription, jobs, { keep, follow }, channel));
  return jobs.map(scope.info);
}

/** A subscription with the acknowledgement the client asked for. */
function newSubscription(scope: SessionScope, id: string, params: Record<string, unknown>): Subscription {
  const clientAck = optionalBoolean(params, 'clientAck') ?? false;
  return scope.subscriptions.open(id, { clientAck });
}

/** `job.ack`: the client's receiver took these records; consume them. */
function ack(scope: SessionScope, params: unknown): undefined {
  const p = objectParams(params, 'job.ack');
  const subscription = scope.subscriptions.get(requiredString(p, 'subscriptionId'));
  if (!Array.isArray(p.acks) || p.acks.length > 100_000) throw invalidParams('acks must be an array.');
  for (const item of p.acks) {
    if (!isPlainObject(item) || !Number.isSafeInteger(item.jobId) || !Number.isSafeInteger(item.seq)) {
      throw invalidParams('each ack is { jobId, seq } with integers.');
    }
  }
  // An ack for a subscription that already ended (cancelled, session taken over) is moot: what
  // it had not acknowledged went back to the spools, and is delivered again.
  if (!subscription) return undefined;
  for (const { jobId, seq } of p.acks as Array<{ jobId: number; seq: number }>) {
    const entry = subscription.sent.get(jobId);
    // Never past what was sent: a client cannot consume records it has not been given.
    const upTo = entry ? Math.min(seq, entry.sentSeq) : 0;
    if (!entry || upTo <= entry.ackedSeq) continue;
    entry.ackedSeq = upTo;
    scope.records.ackUpTo(entry.leaf, upTo);
  }
  subscription.onAck?.();
  return undefined;
}

/** `invoke`: a temporary job, its records streamed until it ends, removed once all were sent. */
function invoke(scope: SessionScope, { params, channel }: MethodCall): Promise<JobInfo> {
  const p = objectParams(params, 'invoke');
  const subscriptionId = requiredString(p, 'subscriptionId');
  const subscription = newSubscription(scope, subscriptionId, p);
  return scope.busy(async () => {
    let job: Job;
    try {
      job = await startWork(scope, params, 'invoke');
    } catch (error) {
      scope.subscriptions.remove(subscription);
      throw error;
    }
    const complete = await pump(scope, subscription, [job], { keep: false, follow: true }, channel);
    // Invoke is synchronous for the caller: wait for the end even if the records ran out early.
    await scope.jobs.wait(job);
    const info = scope.info(job);
    if (complete) {
      await scope.jobs.remove(job, { force: true }).catch(() => {});
      // The job is gone from the session already; deleting its files does not hold the answer
      // back (the record source finishes that before the session can be disposed).
      void scope.records.forget([job]).catch(() => {});
    }
    return info;
  });
}
