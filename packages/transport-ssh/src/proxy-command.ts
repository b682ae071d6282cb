/**
 * ssh_config `ProxyCommand`: the command (tokens already expanded) runs through `/bin/sh -c`, and
 * its stdin and stdout carry the SSH connection, as with OpenSSH. The process ends with the
 * connection; a command that fails before the connection is up fails it with
 * ERR_SSH_PROXY_COMMAND, its exit code and stderr in the message.
 */
import { spawn } from 'node:child_process';
import { Duplex } from 'node:stream';
import { RjobError } from '@rjob/core';
import { SshErrorCode } from './errors.js';
import type { SshHostConfig } from './ssh-config.js';

const STDERR_KEEP_BYTES = 4 * 1024;

export interface ProxyCommandStream {
  /** What ssh2 reads and writes instead of a TCP socket. */
  sock: Duplex;
  /** The coded error to report when the connection failed and the command is why; else undefined. */
  failure(): Promise<RjobError | undefined>;
}

export function startProxyCommand(host: SshHostConfig): ProxyCommandStream {
  const command = host.proxyCommand!;
  const child = spawn('/bin/sh', ['-c', `exec ${command}`], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  let spawnError: Error | undefined;
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text: string) => {
    stderr = (stderr + text).slice(-STDERR_KEEP_BYTES);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  const sock = new Duplex({
    read() {
      child.stdout.resume();
    },
    write(chunk: Buffer, _encoding, callback) {
      if (child.stdin.destroyed) return callback();
      if (child.stdin.write(chunk)) callback();
      else child.stdin.once('drain', () => callback());
    },
    final(callback) {
      child.stdin.end();
      callback();
    },
    destroy(error, callback) {
      child.stdin.destroy();
      child.stdout.destroy();
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      callback(error);
    },
  });
  child.stdout.on('data', (chunk: Buffer) => {
    if (!sock.push(chunk)) child.stdout.pause();
  });
  child.stdout.once('end', () => sock.push(null));
  child.stdin.on('error', () => {});
  child.once('error', (error) => {
    spawnError = error;
    sock.destroy(error);
  });
  return {
    sock,
    async failure() {
      // Only a command that has ended explains a failed connection; a live one was not the cause.
      if (child.exitCode === null && child.signalCode === null && spawnError === undefined) {
        const settled = await Promise.race([exited, new Promise((r) => setTimeout(r, 200, undefined))]);
        if (settled === undefined) return undefined;
      }
      const { code, signal } = await exited;
      if (spawnError === undefined && code === 0) return undefined;
      const how = spawnError ? spawnError.message : code !== null ? `exit ${code}` : `signal ${signal}`;
      return new RjobError(
        SshErrorCode.ProxyCommandFailed,
        `ssh: ${host.alias}: ProxyCommand '${command}' failed (${how})${stderr.trim() ? `: ${stderr.trim()}` : ''}`,
        {
          details: {
            host: host.hostName,
            port: host.port,
            proxyCommand: command,
            exitCode: code,
            stderr: stderr.trim(),
          },
        },
      );
    },
  };
}
