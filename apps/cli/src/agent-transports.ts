/**
 * The transports the CLI knows (unix for `localhost`, the config file's plugin transports, ws for
 * `ws://`/`wss://` URLs, ssh for every other target), as plugins of the local agent daemon: what
 * lets the agent run `invoke --as-job` itself, one RemoteJob per host, with no CLI process per host. Each target is resolved as the
 * invoking CLI would resolve it (its `RJOB_*`, `HOME` and `SSH_AUTH_SOCK`, its working directory),
 * and the SSH and WebSocket stacks load on the first job that needs them, not at daemon start.
 */
import { homedir } from 'node:os';
import type { AgentTransport, RemoteTargetSettings } from '@rjob/agent';
import { RjobError, type TargetTransport } from '@rjob/core';
import { SshErrorCode } from '@rjob/transport-ssh/codes';
import type { CliIo } from './io.js';
import type { StatePaths } from './state.js';
import { TargetResolver } from './targets.js';

/** Resolvers kept for different clients' settings; the oldest goes first (its connections close with their jobs). */
const MAX_RESOLVERS = 16;

/** What of the caller's environment decides how hosts are reached; sent along with --as-job work. */
const PASSED_ENV = /^(RJOB_|SSH_AUTH_SOCK$|HOME$|XDG_)/;

/** The invoking CLI's settings that a RemoteJob in the agent reaches hosts with. */
export function remoteSettings(io: CliIo): { env: Record<string, string>; cwd: string } {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(io.env)) {
    if (value !== undefined && PASSED_ENV.test(key)) env[key] = value;
  }
  return { env, cwd: io.cwd };
}

/** ERR_SSH_NO_AGENT from a host where a shell command can still run by plain exec. */
export function noAgentButExec(error: unknown): boolean {
  for (let e = error; e instanceof Error; e = (e as Error).cause) {
    if (RjobError.is(e) && e.code === SshErrorCode.NoAgent && e.details?.plainExec === true) return true;
  }
  return false;
}

/**
 * The agent daemon's transport plugins; `paths` are the daemon's own (what `localhost` reaches).
 * `plugins` (the config file's) are tried after `localhost` and before WebSocket and SSH, which
 * takes every other target.
 */
export function cliTransports(paths: StatePaths, plugins: readonly TargetTransport[] = []): AgentTransport[] {
  const resolvers = new Map<string, TargetResolver>();
  const resolverFor = (settings: RemoteTargetSettings): TargetResolver => {
    const key = JSON.stringify([
      Object.entries(settings.env).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
      settings.cwd ?? null,
      settings.connectTimeoutMs ?? null,
    ]);
    let resolver = resolvers.get(key);
    if (resolver) {
      // Most recently used last.
      resolvers.delete(key);
      resolvers.set(key, resolver);
      return resolver;
    }
    const sink = { write: () => true };
    // No terminal in the daemon: nothing is asked; an unknown host key is refused, as off a terminal.
    const io = {
      stdout: sink,
      stderr: sink,
      env: settings.env,
      cwd: settings.cwd ?? homedir(),
    } as unknown as CliIo;
    resolver = new TargetResolver(io, paths);
    resolver.usePlugins = false;
    if (settings.connectTimeoutMs !== undefined) resolver.connectTimeoutMs = settings.connectTimeoutMs;
    resolvers.set(key, resolver);
    if (resolvers.size > MAX_RESOLVERS) resolvers.delete(resolvers.keys().next().value!);
    return resolver;
  };
  const resolve: AgentTransport['resolve'] = async (target, settings) => {
    const resolved = await resolverFor(settings).resolve(target);
    return { transport: resolved.transport, target: resolved.target, computerName: resolved.computerName };
  };
  // A host without node: a bare shell command still runs there, by plain SSH exec.
  const fallback: NonNullable<AgentTransport['fallback']> = async (target, settings, work, error) => {
    if (!noAgentButExec(error)) return undefined;
    const { plainShellCommand } = await import('@rjob/transport-ssh');
    const command = plainShellCommand(work);
    if (command === undefined) return undefined;
    const resolver = resolverFor(settings);
    const [resolved, type] = await Promise.all([resolver.resolve(target), resolver.sshExecJobType()]);
    return {
      type,
      definition: { target: resolved.target, command },
      notice: 'no node there, so no agent; running the command by plain SSH exec',
    };
  };
  return [
    { name: 'unix', accepts: (target) => target === 'localhost' || target === 'local', resolve },
    ...plugins,
    { name: 'ws', accepts: (target) => /^wss?:\/\//i.test(target), resolve },
    { name: 'ssh', accepts: () => true, resolve, fallback },
  ];
}
