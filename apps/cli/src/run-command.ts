import { RjobError, type Session } from '@rjob/core';
import { CliContext } from './context.js';
import type { CliIo } from './io.js';
import { ProtocolErrorCode } from '@rjob/core';

/** Another `rjob` invocation took the session over (the CLI holds a session only while it works). */
const TAKEN_OVER = ProtocolErrorCode.SessionTakenOver;
const CHANNEL_CLOSED = ProtocolErrorCode.ChannelClosed;
const LINK_CLOSED = ProtocolErrorCode.LinkClosed;
/** Pause before taking a session back, so the short command that took it can finish. */
const RETAKE_DELAY_MS = 300;

/** Creates the invocation's context, runs `fn`, and always leaves its sessions Disconnected. */
export async function withContext<T>(
  io: CliIo,
  stateDir: string | undefined,
  fn: (ctx: CliContext) => Promise<T>,
): Promise<T> {
  const ctx = new CliContext(io, stateDir);
  try {
    return await fn(ctx);
  } finally {
    await ctx.dispose();
  }
}

/**
 * Runs `fn` on the job session (`-s NAME` or the local jobs). Local jobs are reached through a
 * session of the command's own on the agent's job host, so commands never race there. A named
 * session is taken over: two CLI invocations at once on `-s NAME` take it from each other, and the
 * one that lost it takes it back and repeats its request.
 */
export async function onJobSession<T>(
  ctx: CliContext,
  sessionName: string | undefined,
  fn: (session: Session<unknown>) => Promise<T>,
): Promise<T> {
  for (;;) {
    const session = await ctx.jobSession(sessionName);
    try {
      return await fn(session);
    } catch (error) {
      // `rjob enter`'s own session is not ours to take back; the local jobs' is never taken.
      if (sessionName === undefined || session === ctx.io.session) throw error;
      const takenOver = await wasTakenOver(session, error);
      if (!takenOver) throw error;
      ctx.release(session);
      await new Promise((resolve) => setTimeout(resolve, RETAKE_DELAY_MS));
    }
  }
}

/**
 * True when `error` came from the session being taken over. A request in flight may fail with
 * ERR_CHANNEL_CLOSED a moment before the session records why its link closed, so a closed
 * channel is given a short while to name its reason.
 */
async function wasTakenOver(session: Session<unknown>, error: unknown): Promise<boolean> {
  const named = (): boolean => {
    for (let e: unknown = error; e; e = (e as { cause?: unknown }).cause) {
      if (RjobError.is(e) && e.code === TAKEN_OVER) return true;
    }
    return session.reason?.code === TAKEN_OVER;
  };
  if (named()) return true;
  if (!RjobError.is(error) || (error.code !== CHANNEL_CLOSED && error.code !== LINK_CLOSED)) return false;
  for (let i = 0; i < 20 && !named(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  return named();
}
