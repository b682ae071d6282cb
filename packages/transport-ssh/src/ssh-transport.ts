/**
 * The SSH transport: resolves a target through ssh_config, opens a host-key-verified ssh2
 * connection, execs the agent command (`rjob agent --stdio` by default) and frames the exec
 * channel's stdio into a link. Links to the same target share one SSH connection, up to
 * `maxChannelsPerConnection` channels each; the connection ends with its last link.
 */
import { readFile } from 'node:fs/promises';
import type { Duplex } from 'node:stream';
import { defineTransport, ErrorCode, RjobError, type Transport } from '@rjob/core';
import type { ClientChannel } from 'ssh2';
import {
  createAuthShared,
  type SshAuthShared,
  type SshIdentity,
  type SshPrompter,
  untilAborted,
} from './auth.js';
import { type ConnectSshOptions, connectSsh, type SshConnection } from './connect.js';
import { linkFromExecChannel } from './exec-link.js';
import { deployAgent, shellQuote, withAgentDeploy } from './deploy.js';
import { SshErrorCode, toSshConnectError } from './errors.js';
import { startProxyCommand } from './proxy-command.js';
import { connectThroughJumps } from './proxy-jump.js';
import type { StrictHostKeyChecking } from './known-hosts.js';
import {
  type ResolveSshConfigOptions,
  resolveSshConfig,
  type SshHostConfig,
  type SshTarget,
} from './ssh-config.js';

export { isAgentMissing } from './exec-link.js';

/** What the remote side runs by default. */
export const DEFAULT_AGENT_COMMAND = 'rjob agent --stdio';

/**
 * Where a remote user's agent daemon listens when it runs with its defaults: `<home>/.local/state/rjob/agent.sock`
 * (a daemon whose socket is in `$XDG_RUNTIME_DIR` links it there too). The home is not known
 * before a shell runs, so this is the usual one: `/root` for root, `/home/USER` for everyone else.
 * Tried first, through sshd's socket forwarding; when nothing answers, the agent command runs.
 */
export function defaultRemoteAgentSockets(host: Pick<SshHostConfig, 'user'>): string[] {
  if (!/^[A-Za-z0-9._][A-Za-z0-9._-]*$/.test(host.user) || /^\.+$/.test(host.user)) return [];
  const home = host.user === 'root' ? '/root' : `/home/${host.user}`;
  return [`${home}/.local/state/rjob/agent.sock`];
}
/** Channels per SSH connection: below OpenSSH's default MaxSessions (10). */
export const DEFAULT_MAX_CHANNELS_PER_CONNECTION = 8;

/** A target: `host`, `user@host:port`, `ssh://user@host:port`, an ssh_config alias, or parsed. */
export type SshTransportTarget = string | SshTarget;

export interface SshTransportOptions {
  /**
   * The command exec'd on the remote host; it must speak the protocol on its stdio. Default
   * `rjob agent --stdio`. A function gets the resolved host (a different command per host).
   */
  agentCommand?: string | ((host: SshHostConfig) => string);
  /**
   * Absolute path of the agent daemon's Unix socket on the remote host (`<state dir>/agent.sock`,
   * by default `~/.local/state/rjob/agent.sock` there), or a function of the host giving it. When
   * set, a session first opens a channel straight to that socket through sshd's Unix-socket
   * forwarding (`direct-streamlocal`, on by default in OpenSSH): no process is started for it. If
   * that fails (no daemon running yet, forwarding disabled, another path), the agent command runs
   * as without this option, and starts the daemon. `false`: always the agent command.
   *
   * Default: with the default agent command, the daemon's default socket in the remote user's home
   * ({@link defaultRemoteAgentSockets}: `/home/USER/.local/state/rjob/agent.sock`, `/root/...` for
   * root), so a host whose agent runs is reached without starting Node there; with an
   * `agentCommand` of the caller's, none (that command may use another state directory).
   */
  agentSocket?: string | false | ((host: SshHostConfig) => string | undefined);
  /** How ssh_config is read (files, home, `Match exec`). Default: ~/.ssh/config and /etc/ssh/ssh_config. */
  sshConfig?: ResolveSshConfigOptions;
  /** Overrides ssh_config's StrictHostKeyChecking. Default: the config's, else `ask` (refused without `confirm`). */
  strictHostKeyChecking?: StrictHostKeyChecking;
  /** Overrides ssh_config's UserKnownHostsFile. */
  userKnownHostsFiles?: string[];
  /** Overrides ssh_config's GlobalKnownHostsFile. */
  globalKnownHostsFiles?: string[];
  /** Asked about an unknown host key under `ask`. */
  confirm?: ConnectSshOptions['confirm'];
  /** Write new known_hosts lines hashed. Default false. */
  hashKnownHosts?: boolean;
  /**
   * Asks the user: passphrases of encrypted identity files, passwords, keyboard-interactive
   * answers, and (without `confirm`) unknown host keys. One question is open at a time per
   * transport, and an identity unlocked once serves every connection of the transport. Without a
   * prompter nothing is asked: encrypted keys are skipped, password and keyboard-interactive are
   * not tried.
   */
  prompter?: SshPrompter;
  /** Answers each secret gets before its method is given up. Default 3, as OpenSSH's NumberOfPasswordPrompts. */
  maxPromptTries?: number;
  /** Private key contents; default: every readable IdentityFile from ssh_config, in order. */
  privateKey?: Buffer | string;
  /**
   * Keys to offer instead of ssh_config's IdentityFile (after `privateKey`, if given); `file` names
   * a key in prompts and errors.
   */
  identities?: SshIdentity[];
  /** Passphrase for `privateKey` (or, without it, tried on each encrypted IdentityFile first). */
  passphrase?: string;
  /** ssh-agent socket; `false` for none. Default `SSH_AUTH_SOCK`. */
  agent?: string | false;
  /** Default: ssh_config ConnectTimeout, else 20 000 ms. */
  connectTimeoutMs?: number;
  /** Default: ssh_config ServerAliveInterval, else 15 000 ms; 0 turns keepalive off. */
  keepaliveIntervalMs?: number;
  /** Links sharing one SSH connection. Default 8; keep it below the server's MaxSessions. */
  maxChannelsPerConnection?: number;
  /**
   * When the agent command is not found: `auto` (default) deploys the bundled agent to the user's
   * cache directory if the host has node >= 20.19, and runs it; `never` fails with ERR_SSH_NO_AGENT.
   */
  deploy?: 'auto' | 'never';
  /** The command that runs a deployed bundle. Default `node '<file>' --stdio`. */
  deployedAgentCommand?: (file: string, host: SshHostConfig) => string;
  /**
   * Called when the agent bundle was copied to a host (not when a verified copy was already
   * there): the CLI says so in one line.
   */
  onDeploy?: (event: { host: SshHostConfig; file: string }) => void;
  /** Question queue and unlocked keys; `sshTransport` makes one per transport. */
  authShared?: SshAuthShared;
}

interface PooledConnection {
  key: string;
  ready: Promise<SshConnection>;
  /** Channels open or being opened on it. */
  channels: number;
  dead: boolean;
  end(): void;
}

/** An SSH transport bound to one set of options (and one connection pool). */
export function sshTransport(options: SshTransportOptions = {}): Transport<SshTransportTarget> {
  const maxChannels = options.maxChannelsPerConnection ?? DEFAULT_MAX_CHANNELS_PER_CONNECTION;
  if (!Number.isInteger(maxChannels) || maxChannels < 1) {
    throw new RjobError(ErrorCode.InvalidArgument, 'maxChannelsPerConnection must be a positive integer.');
  }
  const pool = new Map<string, PooledConnection[]>();
  // Shared by every connection (and ProxyJump hop) of this transport, unless the caller brought one.
  options = { ...options, authShared: options.authShared ?? createAuthShared() };
  /** Hosts where the agent was deployed → the command that runs it: later links skip the probe. */
  const deployed = new Map<string, string>();

  const forget = (entry: PooledConnection): void => {
    entry.dead = true;
    const list = pool.get(entry.key);
    if (!list) return;
    const rest = list.filter((e) => e !== entry);
    if (rest.length > 0) pool.set(entry.key, rest);
    else pool.delete(entry.key);
  };

  const release = (entry: PooledConnection): void => {
    entry.channels--;
    if (entry.channels === 0) {
      forget(entry);
      entry.end();
    }
  };

  /** A connection with a free channel slot, reserved for the caller. */
  const acquire = (host: SshHostConfig): PooledConnection => {
    const key = `${host.user}@${host.hostName}:${host.port}`;
    const list = pool.get(key) ?? [];
    const free = list.find((e) => !e.dead && e.channels < maxChannels);
    if (free) {
      free.channels++;
      return free;
    }
    let client: SshConnection['client'] | undefined;
    const entry: PooledConnection = {
      key,
      channels: 1,
      dead: false,
      ready: openConnection(host, options).then((connection) => {
        client = connection.client;
        const onGone = (): void => forget(entry);
        client.on('close', onGone);
        client.on('end', onGone);
        if (entry.dead) client.end();
        return connection;
      }),
      end: () => client?.end(),
    };
    entry.ready.catch(() => forget(entry));
    list.push(entry);
    pool.set(key, list);
    return entry;
  };

  return defineTransport<SshTransportTarget>({
    name: 'ssh',
    async connect(target, { maxFrameBytes, signal }) {
      const host = await resolveSshConfig(target, options.sshConfig ?? {});
      signal?.throwIfAborted();
      const hostKey = `${host.user}@${host.hostName}:${host.port}`;
      const command =
        deployed.get(hostKey) ??
        (typeof options.agentCommand === 'function'
          ? options.agentCommand(host)
          : (options.agentCommand ?? DEFAULT_AGENT_COMMAND));
      const entry = acquire(host);
      const socketPaths = agentSocketsFor(host, options);
      let stream: ClientChannel;
      try {
        const { client } = await untilAborted(() => entry.ready, signal);
        const direct =
          socketPaths.length === 0
            ? undefined
            : await untilAborted(() => openFirstSocketChannel(client, socketPaths), signal).catch(
                (error: unknown) => {
                  if (signal?.aborted) throw error;
                  // No daemon listening there (or no forwarding): the agent command starts one.
                  return undefined;
                },
              );
        stream = direct ?? (await untilAborted(() => exec(client, command, host), signal));
      } catch (error) {
        release(entry);
        throw error;
      }
      if (signal?.aborted) {
        stream.close();
        release(entry);
        signal.throwIfAborted();
      }
      const link = linkFromExecChannel(stream, {
        command,
        host,
        maxFrameBytes,
        onGone: () => release(entry),
      });
      if (options.deploy === 'never') return link;
      return withAgentDeploy(link, async () => {
        deployed.delete(hostKey);
        const again = acquire(host);
        try {
          const { client } = await again.ready;
          const { file, uploaded } = await deployAgent(client, host);
          if (uploaded) options.onDeploy?.({ host, file });
          const run = (options.deployedAgentCommand ?? defaultDeployedAgentCommand)(file, host);
          const channel = await exec(client, run, host);
          deployed.set(hostKey, run);
          return linkFromExecChannel(channel, {
            command: run,
            host,
            maxFrameBytes,
            onGone: () => release(again),
          });
        } catch (error) {
          release(again);
          throw error;
        }
      });
    },
  });
}

function defaultDeployedAgentCommand(file: string): string {
  return `node ${shellQuote(file)} --stdio`;
}

/** Opens a verified connection to a resolved host with the transport's options (also used by plain exec). */
export async function openConnection(
  host: SshHostConfig,
  options: SshTransportOptions,
  /** A jump host's channel to connect over (ProxyJump); default a TCP connection. */
  sock?: Duplex,
): Promise<SshConnection> {
  if (sock === undefined && host.proxyCommand !== undefined) {
    const proxy = startProxyCommand(host);
    try {
      const connection = await openConnection(host, options, proxy.sock);
      // The command lives as long as the connection.
      connection.client.once('close', () => proxy.sock.destroy());
      return connection;
    } catch (error) {
      proxy.sock.destroy();
      throw (await proxy.failure()) ?? error;
    }
  }
  if (sock === undefined && host.proxyJump.length > 0) {
    return connectThroughJumps(host, options, openConnection);
  }
  const config: ConnectSshOptions = {
    host: host.hostName,
    port: host.port,
    username: host.user,
    strictHostKeyChecking: options.strictHostKeyChecking ?? host.strictHostKeyChecking ?? 'ask',
    userKnownHostsFiles: options.userKnownHostsFiles ?? host.userKnownHostsFiles,
    globalKnownHostsFiles: options.globalKnownHostsFiles ?? host.globalKnownHostsFiles,
    connectTimeoutMs:
      options.connectTimeoutMs ??
      (host.connectTimeoutSeconds !== undefined ? host.connectTimeoutSeconds * 1000 : 20_000),
    keepaliveIntervalMs:
      options.keepaliveIntervalMs ??
      (host.serverAliveIntervalSeconds !== undefined ? host.serverAliveIntervalSeconds * 1000 : 15_000),
  };
  if (options.confirm !== undefined) config.confirm = options.confirm;
  if (options.hashKnownHosts !== undefined) config.hashKnownHosts = options.hashKnownHosts;
  if (options.prompter !== undefined) config.prompter = options.prompter;
  if (options.maxPromptTries !== undefined) config.maxPromptTries = options.maxPromptTries;
  if (options.authShared !== undefined) config.authShared = options.authShared;
  const agent = options.agent === undefined ? process.env.SSH_AUTH_SOCK : options.agent;
  if (agent) config.agent = agent;
  if (options.privateKey !== undefined) {
    config.privateKey = options.privateKey;
    if (options.passphrase !== undefined) config.passphrase = options.passphrase;
  }
  if (options.identities !== undefined) config.identities = options.identities;
  else if (options.privateKey === undefined) {
    config.identities = await readIdentities(host.identityFiles, options.passphrase);
  }
  if (sock !== undefined) config.sock = sock;
  return connectSsh(config);
}

/** Every identity file that can be read, in order, as ssh offers them. */
async function readIdentities(files: string[], passphrase: string | undefined): Promise<SshIdentity[]> {
  const out: SshIdentity[] = [];
  for (const file of files) {
    try {
      out.push({ key: await readFile(file), file, ...(passphrase !== undefined ? { passphrase } : {}) });
    } catch {
      // Missing or unreadable: ssh skips it too.
    }
  }
  return out;
}

function exec(client: SshConnection['client'], command: string, host: SshHostConfig): Promise<ClientChannel> {
  return new Promise((resolve, reject) => {
    try {
      client.exec(command, (error, stream) => {
        if (error) {
          reject(
            new RjobError(
              SshErrorCode.ChannelFailed,
              `ssh: ${host.hostName}:${host.port}: could not open a channel: ${error.message}`,
              { cause: error, details: { host: host.hostName, port: host.port } },
            ),
          );
        } else resolve(stream);
      });
    } catch (error) {
      // ssh2 throws synchronously when the connection is already gone.
      reject(toSshConnectError(error, { host: host.hostName, port: host.port }));
    }
  });
}

/** The remote sockets to try before the agent command, per the `agentSocket` option. */
function agentSocketsFor(host: SshHostConfig, options: SshTransportOptions): string[] {
  const given = options.agentSocket;
  if (given === false) return [];
  if (given === undefined) return options.agentCommand === undefined ? defaultRemoteAgentSockets(host) : [];
  const path = typeof given === 'function' ? given(host) : given;
  return path === undefined ? [] : [path];
}

/**
 * Opens channels to every path at once; resolves with the first that connects (the others are
 * closed as they come), or rejects when none does.
 */
function openFirstSocketChannel(client: SshConnection['client'], paths: string[]): Promise<ClientChannel> {
  if (paths.length === 1) return openSocketChannel(client, paths[0]!);
  return new Promise((resolve, reject) => {
    let winner: ClientChannel | undefined;
    let left = paths.length;
    let lastError: unknown;
    for (const path of paths) {
      openSocketChannel(client, path).then(
        (channel) => {
          left--;
          if (winner) channel.close();
          else {
            winner = channel;
            resolve(channel);
          }
        },
        (error: unknown) => {
          left--;
          lastError = error;
          if (left === 0 && !winner) reject(lastError);
        },
      );
    }
  });
}

/** A channel to a Unix socket on the remote host (OpenSSH's direct-streamlocal forwarding). */
function openSocketChannel(client: SshConnection['client'], socketPath: string): Promise<ClientChannel> {
  return new Promise((resolve, reject) => {
    try {
      client.openssh_forwardOutStreamLocal(socketPath, (error, stream) =>
        error ? reject(error) : resolve(stream),
      );
    } catch (error) {
      reject(error);
    }
  });
}
