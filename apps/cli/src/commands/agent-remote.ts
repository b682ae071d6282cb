/**
 * `rjob agent status|stop -c HOST[,HOST…]`: the agent daemons on other hosts. Each host is reached
 * as any target is (an SSH alias or user@host[:port], a ws:// URL; a daemon starts on demand as for
 * every command), then asked `agent.info` or `agent.stop`. One line per host (or `--json`); the
 * exit code is the fan-out's: 4 when a host was unreachable, else 1 when one failed.
 */
import { type AgentProcessInfo, openSession, RjobError, type Session } from '@rjob/core';
import { parse, strs } from '../args.js';
import { isUnreachableCode, oneLine } from '../errors.js';
import { helpFor } from '../help.js';
import { type CliIo, ExitCode, usageError } from '../io.js';
import type { StatePaths } from '../state.js';
import { expandComputers, TargetResolver } from '../targets.js';

interface HostResult {
  host: string;
  ok: boolean;
  /** With ok: the agent's answer, and its software as its handshake named it. */
  agent?: AgentProcessInfo;
  error?: { code: string; message: string; unreachable: boolean };
}

export async function agentRemote(
  verb: 'status' | 'stop',
  argv: readonly string[],
  io: CliIo,
  paths: StatePaths,
): Promise<number> {
  const { values, positionals } = parse(argv, {
    computer: { type: 'string', short: 'c', multiple: true },
    json: { type: 'boolean' },
  });
  if (values.help) return helpFor('agent', io);
  if (positionals.length > 0) throw usageError(`unexpected argument ${positionals[0]}`);
  const hosts = await expandComputers(strs(values.computer), io);
  if (hosts.length === 0) throw usageError(`agent ${verb} -c needs at least one host`);
  const targets = new TargetResolver(io, paths);
  const results = await Promise.all(hosts.map((host) => ask(verb, host, targets)));
  if (values.json) io.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
  else for (const result of results) io.stdout.write(`${line(verb, result)}\n`);
  if (results.some((r) => r.error?.unreachable)) return ExitCode.Unreachable;
  if (results.some((r) => !r.ok)) return ExitCode.JobFailed;
  return ExitCode.Ok;
}

async function ask(verb: 'status' | 'stop', host: string, targets: TargetResolver): Promise<HostResult> {
  let session: Session<unknown> | undefined;
  try {
    const resolved = await targets.resolve(host);
    session = await openSession(resolved.transport, resolved.target, {
      computerName: resolved.computerName,
      autoReconnect: false,
    });
    const answer = await session.request(verb === 'stop' ? 'agent.stop' : 'agent.info');
    // The handshake's name wins: it is what every client of that daemon is told.
    return { host, ok: true, agent: { ...answer, software: session.agentSoftware ?? answer.software } };
  } catch (error) {
    const code = RjobError.is(error)
      ? error.code
      : String((error as { code?: unknown })?.code ?? 'ERR_INTERNAL');
    const message = oneLine(error instanceof Error ? error.message : String(error));
    return { host, ok: false, error: { code, message, unreachable: isUnreachableCode(code) } };
  } finally {
    // Our session is of no use once answered; after a stop the daemon may already be gone.
    await session?.close({ wait: false }).catch(() => {});
  }
}

function line(verb: 'status' | 'stop', result: HostResult): string {
  if (!result.ok) {
    const what = result.error!.unreachable ? 'UNREACHABLE' : 'FAILED';
    return `[${result.host}] ${what}: ${result.error!.message} (${result.error!.code})`;
  }
  const agent = result.agent!;
  if (verb === 'stop') {
    // Reaching a host starts its daemon on demand: one started just for this stop was not running.
    return agent.firstClient
      ? `[${result.host}] agent was not running`
      : `[${result.host}] agent stopped (pid ${agent.pid}, ${agent.software})`;
  }
  return `[${result.host}] agent running: ${agent.software}, pid ${agent.pid}, up ${duration(agent.uptimeMs)}, ${agent.sessions} sessions, ${agent.jobs} jobs (${agent.runningJobs} running)${agent.firstClient ? ', started now' : ''}`;
}

function duration(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
}
