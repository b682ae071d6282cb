/**
 * What `-c/--computer` names become: `localhost` is the local agent over its Unix socket; a target
 * a plugin transport accepts (the config file's, plugins.ts) goes through it; a `ws://` or
 * `wss://` URL goes over WebSocket; anything else is an SSH target or ssh_config alias.
 */
import { fsp } from './lazy-fs.js';
import { isAbsolute, resolve } from 'node:path';
import {
  defineTransport,
  ErrorCode,
  type JobType,
  RjobError,
  type Transport,
  unixSocketTransport,
} from '@rjob/core';
import type { CliIo } from './io.js';
import { usageError } from './io.js';
import { ensureAgent } from './local-agent.js';
import type { StatePaths } from './state.js';

// The SSH and WebSocket stacks (ssh2, ws and their transports) load only when a target needs them:
// a local `rjob get` starts without them (docs/decisions.md, "CLI start-up").

export interface ResolvedTarget {
  transport: Transport<unknown>;
  target: unknown;
  computerName: string;
}

/**
 * Builds transports once per invocation, so every SSH target of a fan-out shares one pool.
 * Environment knobs (documented in docs/cli.md): `RJOB_REMOTE_AGENT` (the command exec'd over SSH),
 * `RJOB_REMOTE_SOCKET` (the remote daemon's socket, tried first),
 * `RJOB_SSH_KNOWN_HOSTS`, `RJOB_SSH_IDENTITY`, `RJOB_SSH_STRICT` (yes / accept-new / no),
 * `RJOB_WS_TOKEN_FILE`; ssh_config is read from `$HOME/.ssh/config`. On a terminal (stdin and
 * stderr), SSH asks there for what it needs: an unknown host key, passphrases, passwords.
 */
export class TargetResolver {
  readonly #io: CliIo;
  readonly #paths: StatePaths;
  #ssh: Transport<unknown> | undefined;
  #ws: Transport<unknown> | undefined;
  #local: Transport<unknown> | undefined;
  #identity: Promise<string | undefined> | undefined;
  /** `invoke --connect-timeout`: how long reaching an SSH host may take (TCP, key exchange, login). */
  connectTimeoutMs: number | undefined;
  /**
   * Whether targets go to the config file's plugin transports first. False in the agent daemon,
   * whose transport list has the plugins' before this resolver's (agent-transports.ts).
   */
  usePlugins = true;
  /** Plugins that were not loaded are told once per command. */
  #toldFailures = false;

  constructor(io: CliIo, paths: StatePaths) {
    this.#io = io;
    this.#paths = paths;
  }

  async resolve(spec: string): Promise<ResolvedTarget> {
    if (spec === 'localhost' || spec === 'local') {
      this.#local ??= this.#localTransport();
      return { transport: this.#local, target: this.#paths.socketPath, computerName: 'localhost' };
    }
    if (this.usePlugins) {
      const viaPlugin = await this.#pluginTarget(spec);
      if (viaPlugin) return viaPlugin;
    }
    if (/^wss?:\/\//i.test(spec)) {
      const { wsTransport } = await import('@rjob/transport-ws');
      this.#ws ??= wsTransport({
        ...(this.#io.env.RJOB_WS_TOKEN_FILE ? { tokenFile: this.#io.env.RJOB_WS_TOKEN_FILE } : {}),
      }) as Transport<unknown>;
      return { transport: this.#ws, target: spec, computerName: new URL(spec).host };
    }
    this.#ssh ??= await this.#sshTransport();
    return { transport: this.#ssh, target: spec, computerName: spec };
  }

  /**
   * `spec` through the first plugin transport that accepts it. Without a config file this reads
   * one missing file; the plugin modules load only when the file names some.
   */
  async #pluginTarget(spec: string): Promise<ResolvedTarget | undefined> {
    const [{ failureLine, loadPlugins }, { remoteSettings }] = await Promise.all([
      import('./plugins.js'),
      import('./agent-transports.js'),
    ]);
    const loaded = await loadPlugins(this.#io);
    const plugin = loaded.transports.find((transport) => transport.accepts(spec));
    if (!plugin) {
      // The transport meant for this target may be the one that failed to load.
      if (!this.#toldFailures) {
        this.#toldFailures = true;
        for (const failure of loaded.failures) this.#io.stderr.write(`rjob: ${failureLine(failure)}\n`);
      }
      return undefined;
    }
    const resolved = await plugin.resolve(spec, {
      ...remoteSettings(this.#io),
      connectTimeoutMs: this.connectTimeoutMs,
    });
    return {
      transport: resolved.transport,
      target: resolved.target,
      computerName: resolved.computerName ?? spec,
    };
  }

  /**
   * The local agent's socket, started when nothing answers there. No probe before the connection
   * (a probe is a connection of its own, on every command): the first connect that finds no agent
   * starts one (ensureAgent) and connects again. Only the first: a later reconnect of a session
   * never starts an agent that went away, as before.
   */
  #localTransport(): Transport<unknown> {
    let first = true;
    return defineTransport<unknown>({
      name: unixSocketTransport.name,
      connect: async (target, options) => {
        const once = first;
        first = false;
        try {
          return await unixSocketTransport.connect(target as string, options);
        } catch (error) {
          if (!once || !RjobError.hasCode(error, ErrorCode.AgentUnreachable)) throw error;
        }
        await ensureAgent(this.#paths, this.#io);
        return unixSocketTransport.connect(target as string, options);
      },
    });
  }

  async #sshTransport(): Promise<Transport<unknown>> {
    const [{ sshTransport }, options] = await Promise.all([
      import('@rjob/transport-ssh'),
      this.#sshOptions(),
    ]);
    return sshTransport(options) as Transport<unknown>;
  }

  /**
   * Plain SSH exec with the same host keys, identities and prompts as the SSH transport: for hosts
   * without node, where only shell commands can run (`invoke`'s agentless fallback).
   */
  async sshExecJobType(): Promise<JobType<{ target: unknown; command: string }>> {
    const [{ sshExecJobType }, options] = await Promise.all([
      import('@rjob/transport-ssh'),
      this.#sshOptions(),
    ]);
    return sshExecJobType(options) as unknown as JobType<{ target: unknown; command: string }>;
  }

  async #sshOptions(): Promise<import('@rjob/transport-ssh').SshTransportOptions> {
    const env = this.#io.env;
    const strict = env.RJOB_SSH_STRICT;
    if (strict !== undefined && !['yes', 'accept-new', 'no'].includes(strict)) {
      throw usageError(`RJOB_SSH_STRICT must be yes, accept-new or no, not ${strict}`);
    }
    const identityFile = env.RJOB_SSH_IDENTITY ? this.#abs(env.RJOB_SSH_IDENTITY) : undefined;
    this.#identity ??= identityFile ? fsp().readFile(identityFile, 'utf8') : Promise.resolve(undefined);
    const privateKey = await this.#identity;
    const { terminalPrompter } = await import('./terminal-prompt.js');
    const prompter = terminalPrompter(this.#io);
    return {
      ...(env.RJOB_REMOTE_AGENT ? { agentCommand: env.RJOB_REMOTE_AGENT } : {}),
      // A running daemon reached through its socket, no relay process (see sshTransport's agentSocket).
      ...(env.RJOB_REMOTE_SOCKET ? { agentSocket: env.RJOB_REMOTE_SOCKET } : {}),
      ...(env.HOME ? { sshConfig: { home: env.HOME } } : {}),
      ...(env.RJOB_SSH_KNOWN_HOSTS ? { userKnownHostsFiles: [this.#abs(env.RJOB_SSH_KNOWN_HOSTS)] } : {}),
      ...(strict ? { strictHostKeyChecking: strict as 'yes' | 'accept-new' | 'no' } : {}),
      ...(this.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: this.connectTimeoutMs }),
      // Named, so that a passphrase question says which key it is for.
      ...(privateKey
        ? { identities: [{ key: privateKey, ...(identityFile ? { file: identityFile } : {}) }] }
        : {}),
      // Off a terminal nothing is asked: an unknown host key is refused, never silently accepted,
      // and encrypted keys, passwords and keyboard-interactive are not tried.
      ...(prompter ? { prompter } : {}),
      agent: env.SSH_AUTH_SOCK ?? false,
      // The first use of a host with node but no rjob copies the agent there: said in one line.
      onDeploy: ({ host, file }) =>
        this.#io.stderr.write(`rjob: ${host.alias}: installed the rjob agent as ${file}\n`),
    };
  }

  #abs(path: string): string {
    return isAbsolute(path) ? path : resolve(this.#io.cwd, path);
  }
}

/**
 * `-c a,b,@hosts.txt,@inventory.ini:web`: commas split, `@FILE[:PATTERN]` reads an inventory or a
 * plain host list (see inventory.ts).
 */
export async function expandComputers(values: readonly string[], io: CliIo): Promise<string[]> {
  const { expandHosts } = await import('./inventory.js');
  return (await expandHosts(values, io)).hosts;
}
