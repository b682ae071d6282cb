/**
 * ProxyJump: reaching a host through one or more SSH jump hosts, as `ssh -J a,b target` does. Each
 * hop is a verified, authenticated SSH connection of its own (its host key checked against
 * known_hosts under the hop's name); the next hop is reached through a `direct-tcpip` channel of
 * the previous one, so only the first hop is dialled directly.
 */
import type { Duplex } from 'node:stream';
import { RjobError } from '@rjob/core';
import type { SshConnection } from './connect.js';
import { SshErrorCode } from './errors.js';
import { type ResolveSshConfigOptions, resolveSshConfig, type SshHostConfig } from './ssh-config.js';

/** Opens one hop: directly when `sock` is undefined, else over it. */
export type ConnectHop<Options> = (
  host: SshHostConfig,
  options: Options,
  sock?: Duplex,
) => Promise<SshConnection>;

/**
 * Connects to `host` through its `proxyJump` hops, in order. Each jump host is resolved through
 * ssh_config like a target (HostName, User, Port, IdentityFile, known_hosts), but its own
 * ProxyJump is not followed. The hops end when the final connection closes; if any hop fails, the
 * ones already open are ended and that hop's coded error is thrown.
 */
export async function connectThroughJumps<Options extends { sshConfig?: ResolveSshConfigOptions }>(
  host: SshHostConfig,
  options: Options,
  connectHop: ConnectHop<Options>,
): Promise<SshConnection> {
  const path: SshHostConfig[] = [];
  for (const jump of host.proxyJump) {
    path.push({ ...(await resolveSshConfig(jump, options.sshConfig ?? {})), proxyJump: [] });
  }
  path.push({ ...host, proxyJump: [] });
  const opened: SshConnection['client'][] = [];
  const endHops = (): void => {
    for (const client of [...opened].reverse()) client.end();
  };
  try {
    let previous: SshConnection | undefined;
    for (const next of path) {
      const sock = previous === undefined ? undefined : await forward(previous.client, next);
      previous = await connectHop(next, options, sock);
      opened.push(previous.client);
    }
    const last = opened.pop()!;
    // The jump connections only carry this one; they go when it goes.
    last.once('close', endHops);
    return previous!;
  } catch (error) {
    endHops();
    throw error;
  }
}

/** A `direct-tcpip` channel from a hop to the next host's SSH port. */
function forward(client: SshConnection['client'], next: SshHostConfig): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const details = { host: next.hostName, port: next.port, via: 'ProxyJump' };
    try {
      client.forwardOut('127.0.0.1', 0, next.hostName, next.port, (error, channel) => {
        if (!error) return resolve(channel);
        // The jump host reports why it could not connect; a refused port keeps its own code, so a
        // fan-out child says the same thing with or without a jump.
        const refused = /refused/i.test(error.message);
        reject(
          new RjobError(
            refused ? SshErrorCode.ConnectRefused : SshErrorCode.ConnectFailed,
            `ssh: jump host could not connect to ${next.hostName}:${next.port}: ${error.message}`,
            { cause: error, details },
          ),
        );
      });
    } catch (error) {
      // ssh2 throws synchronously when the hop's connection is already gone.
      reject(
        new RjobError(SshErrorCode.ConnectFailed, `ssh: jump host connection lost before ${next.hostName}`, {
          cause: error,
          details,
        }),
      );
    }
  });
}
