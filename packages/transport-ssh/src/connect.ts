import type { Duplex } from 'node:stream';
import { Client, type ConnectConfig } from 'ssh2';
import type { RjobError } from '@rjob/core';
import { toSshConnectError } from './errors.js';
import { type CheckHostKeyOptions, checkHostKey, type HostKeyDecision } from './known-hosts.js';

export interface ConnectSshOptions
  extends Omit<CheckHostKeyOptions, 'host' | 'port' | 'keyBlob' | 'keyType'> {
  host: string;
  /** Default 22. */
  port?: number;
  username: string;
  /** Private key contents (PEM or OpenSSH format). */
  privateKey?: Buffer | string;
  /** Passphrase for `privateKey`. */
  passphrase?: string;
  /** ssh-agent socket. Default none (the session layer will default to `SSH_AUTH_SOCK`). */
  agent?: string;
  /** TCP connect plus handshake, in milliseconds. Default 20 000 (ssh2's own default). */
  connectTimeoutMs?: number;
  /** Keepalive interval in milliseconds; 0 turns it off. Default 15 000. */
  keepaliveIntervalMs?: number;
  /** An already open stream to the server (a jump host's channel) instead of a TCP connection. */
  sock?: Duplex;
}

export interface SshConnection {
  client: Client;
  /** How the host key was judged (and any known_hosts line written for it). */
  hostKey: HostKeyDecision;
}

/**
 * Opens an authenticated ssh2 connection whose host key has passed {@link checkHostKey}. ssh2
 * itself accepts any host key unless given a verifier; this always installs one. Rejects with a
 * coded RjobError: host-key refusal, refused connection, DNS, timeout or authentication failure.
 */
export function connectSsh(options: ConnectSshOptions): Promise<SshConnection> {
  const port = options.port ?? 22;
  const client = new Client();
  return new Promise((resolve, reject) => {
    let hostKeyError: RjobError | undefined;
    let decision: HostKeyDecision | undefined;
    let settled = false;
    const fail = (error: unknown) => {
      if (settled) return;
      settled = true;
      client.end();
      reject(hostKeyError ?? toSshConnectError(error, { host: options.host, port }));
    };
    const config: ConnectConfig = {
      host: options.host,
      port,
      username: options.username,
      readyTimeout: options.connectTimeoutMs ?? 20_000,
      keepaliveInterval: options.keepaliveIntervalMs ?? 15_000,
      hostVerifier: (keyBlob: Buffer, verify: (valid: boolean) => void) => {
        const check: CheckHostKeyOptions = { host: options.host, port, keyBlob };
        // Only the host-key fields: the key material and passphrase have no business there.
        if (options.strictHostKeyChecking !== undefined)
          check.strictHostKeyChecking = options.strictHostKeyChecking;
        if (options.userKnownHostsFiles !== undefined)
          check.userKnownHostsFiles = options.userKnownHostsFiles;
        if (options.globalKnownHostsFiles !== undefined)
          check.globalKnownHostsFiles = options.globalKnownHostsFiles;
        if (options.hashKnownHosts !== undefined) check.hashKnownHosts = options.hashKnownHosts;
        if (options.confirm !== undefined) check.confirm = options.confirm;
        checkHostKey(check).then(
          (d) => {
            decision = d;
            verify(true);
          },
          (error: unknown) => {
            hostKeyError = toSshConnectError(error, { host: options.host, port });
            verify(false);
          },
        );
      },
    };
    if (options.privateKey !== undefined) config.privateKey = options.privateKey;
    if (options.passphrase !== undefined) config.passphrase = options.passphrase;
    if (options.agent !== undefined) config.agent = options.agent;
    if (options.sock !== undefined) config.sock = options.sock;
    client.once('ready', () => {
      if (settled) return;
      settled = true;
      client.removeListener('error', fail);
      // Later errors (a dropped link) are the session layer's business; keep them from crashing.
      client.on('error', () => {});
      // Requests are small frames answered by small frames: Nagle would hold a frame's second
      // segment for the peer's delayed ACK (40 ms on Linux) on every round trip.
      client.setNoDelay(true);
      // The verifier always runs before 'ready', so a decision exists here.
      resolve({ client, hostKey: decision! });
    });
    client.on('error', fail);
    client.once('close', () => fail(new Error('connection closed during handshake')));
    client.connect(config);
  });
}

/** Runs one command on an open connection and collects its output (for tests and probes). */
export function execOnce(
  client: Client,
  command: string,
): Promise<{ stdout: string; stderr: string; exitCode: number | null; signal: string | undefined }> {
  return new Promise((resolve, reject) => {
    client.exec(command, (error, channel) => {
      if (error) return reject(error);
      let stdout = '';
      let stderr = '';
      let exitCode: number | null = null;
      let signal: string | undefined;
      channel.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
      channel.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
      channel.on('exit', (code: number | null, sig?: string) => {
        exitCode = code;
        signal = sig;
      });
      channel.on('close', () => resolve({ stdout, stderr, exitCode, signal }));
    });
  });
}
