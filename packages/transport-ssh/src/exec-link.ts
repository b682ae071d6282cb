/**
 * An exec channel running the agent command, framed into a link: its stdout is held back until
 * the exit status is known, so a missing agent reads as ERR_SSH_NO_AGENT.
 */
import { Duplex } from 'node:stream';
import { channelFromDuplex, RjobError, type TransportChannel } from '@rjob/core';
import type { ClientChannel } from 'ssh2';
import { SshErrorCode } from './errors.js';
import type { SshHostConfig } from './ssh-config.js';

/** How much of the agent command's stderr is kept for error messages. */
const STDERR_KEEP_BYTES = 8 * 1024;
/** Frames of one turn up to this many bytes in all are copied into one channel write. */
const GATHER_BYTES = 64 * 1024;
/** After a link closes, how long the remote command may take to close its channel. */
const CHANNEL_CLOSE_GRACE_MS = 2_000;

export interface ExecLinkOptions {
  command: string;
  host: SshHostConfig;
  maxFrameBytes: number;
  /** Called once the channel is closed (or given up on): frees its slot on the connection. */
  onGone(): void;
}

/** True when the remote shell could not find (or run) the agent command. */
export function isAgentMissing(
  exitCode: number | null | undefined,
  stderr: string,
  gotOutput: boolean,
): boolean {
  if (exitCode === 127) return true;
  return !gotOutput && exitCode !== 0 && /(command )?not found|No such file or directory/i.test(stderr);
}

/**
 * Frames an exec channel. Its stdout is relayed through a Duplex this function owns, so the end
 * of the stream is only reported once the exit status is known: a missing agent then closes the
 * link with ERR_SSH_NO_AGENT rather than a bare ERR_LINK_CLOSED.
 */
export function linkFromExecChannel(stream: ClientChannel, options: ExecLinkOptions): TransportChannel {
  const { host, command } = options;
  let stderr = '';
  let gotOutput = false;
  let exitCode: number | null | undefined;
  let exitSignal: string | undefined;
  let failure: RjobError | undefined;
  let gone = false;
  const markGone = (): void => {
    if (gone) return;
    gone = true;
    options.onGone();
  };

  const relay = new Duplex({
    read() {
      stream.resume();
    },
    write(chunk: Buffer, _encoding, callback) {
      if (stream.write(chunk)) callback();
      else stream.once('drain', () => callback());
    },
    // The frames of one event-loop turn (corked by channelFromDuplex) leave as one SSH packet:
    // ssh2's channel has no writev of its own, so each chunk would be a packet, a cipher pass
    // and a socket write on both ends, and one more hop for sshd to relay.
    // Large frames (a batch of input) are not copied into one buffer: ssh2 cuts them into packets
    // anyway, so they go as they are.
    writev(chunks, callback) {
      const buffers = chunks.map((c) => c.chunk as Buffer);
      const total = buffers.reduce((bytes, buffer) => bytes + buffer.length, 0);
      let ok = true;
      if (buffers.length === 1 || total > GATHER_BYTES)
        for (const buffer of buffers) ok = stream.write(buffer);
      else ok = stream.write(Buffer.concat(buffers, total));
      if (ok) callback();
      else stream.once('drain', () => callback());
    },
    final(callback) {
      stream.end();
      callback();
    },
    destroy(error, callback) {
      // Let the remote command see EOF and close its channel; close it ourselves if it lingers.
      if (!gone) {
        setTimeout(() => {
          if (!gone) {
            stream.close();
            markGone();
          }
        }, CHANNEL_CLOSE_GRACE_MS).unref();
      }
      callback(error);
    },
  });

  stream.on('data', (chunk: Buffer) => {
    gotOutput = true;
    if (relay.destroyed || relay.readableEnded) return;
    if (!relay.push(chunk)) stream.pause();
  });
  // A socket channel has no stderr to speak of; an exec channel's says why a command failed.
  stream.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString('utf8')).slice(-STDERR_KEEP_BYTES);
  });
  stream.on('exit', (code: number | null, signal?: string) => {
    exitCode = code;
    exitSignal = signal;
  });
  stream.on('error', () => {
    // Reported through 'close' below; the relay ends the link.
  });
  stream.once('close', () => {
    if (isAgentMissing(exitCode, stderr, gotOutput)) {
      failure = new RjobError(
        SshErrorCode.NoAgent,
        `ssh: ${host.alias}: the rjob agent is not installed there ('${command}' not found, exit ${exitCode ?? exitSignal}): ${stderr.trim()}`,
        {
          details: {
            host: host.hostName,
            port: host.port,
            command,
            exitCode: exitCode ?? null,
            stderr: stderr.trim(),
          },
        },
      );
    }
    if (!relay.destroyed) relay.push(null);
    markGone();
  });

  const inner = channelFromDuplex(relay, { maxFrameBytes: options.maxFrameBytes });
  return {
    maxFrameBytes: inner.maxFrameBytes ?? options.maxFrameBytes,
    send: (frame) => inner.send(frame),
    onMessage: (handler) => inner.onMessage(handler),
    onDrain: (handler) => inner.onDrain?.(handler) ?? (() => {}),
    close: (reason) => inner.close(reason),
    onClose: (handler) => inner.onClose((reason) => handler(failure ?? reason)),
  };
}
