/**
 * How a session answers on its channel: responses (with the error in place of a result that cannot
 * be sent), events, and the wait for the client's acknowledgement that some answers need before
 * the session acts on them.
 */
import { ErrorCode, RjobError, serializeError, toRjobError } from '@rjob/core';
import type { Payload, ReliableChannel, SessionEvents } from '@rjob/core/protocol';
import { AgentErrorCode } from '../error-codes.js';

/** How long `session.close` / `session.disconnect` wait for the client to acknowledge the answer. */
const ANSWER_ACK_WAIT_MS = 5_000;

/** Sends an event on `channel`; returns false when the caller should wait for drain. */
export function sendEvent<E extends keyof SessionEvents>(
  channel: ReliableChannel,
  name: E,
  data: SessionEvents[E],
): boolean {
  if (channel.state === 'closed') return false;
  return channel.send({ type: 'event', name, data });
}

/** Sends a response; a result that cannot be sent is answered with the error instead. */
export function answer(
  channel: ReliableChannel,
  id: number,
  body: { result?: unknown; error?: ReturnType<typeof serializeError> },
): number {
  return answerReporting(channel, id, body).seq;
}

/** {@link answer}, telling whether the body itself went out (`sent`) or the error in its place. */
export function answerReporting(
  channel: ReliableChannel,
  id: number,
  body: { result?: unknown; error?: ReturnType<typeof serializeError> },
): { seq: number; sent: boolean } {
  if (channel.state === 'closed') return { seq: 0, sent: false };
  const payload: Payload = { type: 'response', id, ...body };
  try {
    channel.send(payload);
  } catch (error) {
    // send() may have closed the channel on its way out.
    if ((channel.state as string) === 'closed') return { seq: 0, sent: false };
    try {
      channel.send({ type: 'response', id, error: serializeError(coded(error)) });
    } catch {
      return { seq: 0, sent: false };
    }
    return { seq: channel.sentSeq, sent: false };
  }
  return { seq: channel.sentSeq, sent: true };
}

/** Waits (bounded) until the client has acknowledged our message `seq`, or the channel closed. */
export async function afterAck(channel: ReliableChannel, seq: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      channel.whenAcked(seq).catch(() => {}),
      new Promise((resolveWait) => (timer = setTimeout(resolveWait, ANSWER_ACK_WAIT_MS))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The error a method failed with, as the client gets it: a bad argument or an agent fault. */
export function coded(error: unknown): RjobError {
  if (RjobError.is(error)) return error;
  if (error instanceof TypeError || error instanceof RangeError) {
    return toRjobError(error, ErrorCode.InvalidArgument);
  }
  return toRjobError(error, AgentErrorCode.Internal);
}
