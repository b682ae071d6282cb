/**
 * `rjob invoke --disconnected`: the work started in a new named session on every host, each left
 * Disconnected at once and remembered as `rjob session new` remembers its own.
 */
import { defineTransport, invokeMany, type WorkRequest } from '@rjob/core';
import type { CliContext } from '../context.js';
import { describeError } from '../errors.js';
import { type SessionRow, sessionTable } from '../format.js';
import { type CliIo, ExitCode } from '../io.js';
import type { StoredSession } from '../state.js';
import type { ResolvedTarget } from '../targets.js';
import { sessionRow } from './session.js';

/**
 * `rjob invoke -c HOSTS --disconnected` (Invoke-Command -InDisconnectedSession): on every host, a
 * new named session with the work started in it as a job, left Disconnected at once. The sessions
 * are printed and remembered like `session new`'s; their jobs run on, and `session receive`,
 * `session connect` or `receive -s NAME` get the results later. A host that cannot be reached is
 * one error line on stderr (exit 4); the others still get their session.
 */
export async function invokeDisconnected(
  ctx: CliContext,
  io: CliIo,
  hosts: readonly string[],
  work: WorkRequest,
  throttleLimit = 32,
): Promise<number> {
  const existing = await ctx.store.list();
  // Names are handed out before anything connects, so hosts opened at once never collide.
  const taken = new Set(existing.map((s) => s.name));
  const names = hosts.map(() => {
    let n = existing.length + 1;
    while (taken.has(`Session${n}`)) n++;
    taken.add(`Session${n}`);
    return `Session${n}`;
  });
  // One target per position (a host may be named twice), so a failure is told back to its host.
  type Spec = { host: string; index: number };
  const specs: Spec[] = hosts.map((host, index) => ({ host, index }));
  // A host that cannot even be resolved (a bad RJOB_SSH_* setting, no local agent) reports its
  // own error, not the connect failure the session client would make of it.
  const unresolved = new Map<Spec, unknown>();
  const transport = defineTransport<Spec>({
    name: 'rjob',
    async connect(spec, options) {
      let resolved: ResolvedTarget;
      try {
        resolved = await ctx.targets.resolve(spec.host);
      } catch (error) {
        unresolved.set(spec, error);
        throw error;
      }
      return resolved.transport.connect(resolved.target, options);
    },
  });
  const results = await invokeMany(undefined, specs, work, {
    disconnected: true,
    transport,
    throttleLimit,
    computerName: (spec) => computerNameOf(spec.host),
    sessionName: (_spec, index) => names[index]!,
    sessionOptions: { autoReconnect: false },
  });
  const rows: SessionRow[] = [];
  let exitCode: number = ExitCode.Ok;
  for (const [i, result] of results.entries()) {
    const host = hosts[i]!;
    if (!result.error) {
      const stored: StoredSession = {
        // The name handed out here, even from an agent that could not take it.
        name: names[i]!,
        target: host,
        sessionId: result.sessionId,
        resumeSecret: result.resumeSecret,
        createdAtMs: Date.now(),
      };
      await ctx.store.put(stored);
      rows.push(sessionRow(existing.length + rows.length + 1, stored, result.sessionInfo));
    } else {
      const { exitCode: code, line } = describeError(unresolved.get(specs[i]!) ?? result.error);
      io.stderr.write(`rjob: ${host}: ${line}\n`);
      if (exitCode === ExitCode.Ok || code === ExitCode.Unreachable) exitCode = code;
    }
  }
  if (rows.length > 0) io.stdout.write(sessionTable(rows));
  return exitCode;
}

/** The computer name `TargetResolver.resolve` gives a host, known before it is resolved. */
function computerNameOf(host: string): string {
  if (host === 'localhost' || host === 'local') return 'localhost';
  if (/^wss?:\/\//i.test(host)) {
    try {
      return new URL(host).host;
    } catch {
      // Resolving it fails the same way, and that error is the one reported.
      return host;
    }
  }
  return host;
}
