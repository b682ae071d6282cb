/**
 * The `--stdio` bridge: what sshd runs for every SSH session to the agent. It copies bytes between
 * stdio and the running daemon's socket, starting the daemon when none answers. It imports only
 * Node's own modules (the rest of the agent is loaded by the daemon, not here), so a session open
 * pays for a bare Node start and little more.
 */
import { fstatSync } from 'node:fs';
import { createConnection, Socket as NetSocket, type Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { AgentErrorCode } from '../error-codes.js';
import { waitForSocket } from './daemon-start.js';

export interface BridgeOptions {
  /** The agent daemon's socket. */
  socketPath: string;
  /** Starts the daemon (detached); called once, when nothing answers on the socket. */
  startDaemon(): void | Promise<void>;
  /** How long to wait for a freshly started daemon to answer, in ms. Default 15 000. */
  daemonStartTimeoutMs?: number;
  /** Default `process.stdin`. */
  input?: Readable;
  /** Default `process.stdout`. */
  output?: Writable;
}

/**
 * Copies bytes both ways between stdio and the daemon socket (no framing here: the daemon speaks
 * the protocol). Resolves when the socket has closed, after stdin ended or the daemon hung up.
 */
export async function bridgeStdioToDaemon(options: BridgeOptions): Promise<void> {
  const input = options.input ?? process.stdin;
  const output = options.output ?? stdoutForBridging();
  let socket = await connectOnce(options.socketPath);
  if (!socket) {
    await options.startDaemon();
    if (await waitForSocket(options.socketPath, options.daemonStartTimeoutMs ?? 15_000))
      socket = await connectOnce(options.socketPath);
    if (!socket) {
      // Loaded on this failure only: the bridge itself does without the core library.
      const { RjobError } = await import('@rjob/core');
      throw new RjobError(
        AgentErrorCode.AgentRunning,
        `The agent daemon did not start on ${options.socketPath}.`,
        {
          details: { socketPath: options.socketPath },
        },
      );
    }
  }
  const connected = socket;
  return new Promise((resolve) => {
    // The peer going away mid-write is how a bridge normally ends; nothing to report.
    input.on('error', () => connected.destroy());
    output.on('error', () => connected.destroy());
    connected.on('error', () => {});
    connected.once('close', () => {
      input.unpipe(connected);
      input.pause();
      resolve();
    });
    input.pipe(connected);
    connected.pipe(output);
  });
}

/**
 * Standard output for a byte pump. Node writes `process.stdout` synchronously when it is a pipe,
 * so the bridge would stop reading the daemon's socket each time sshd is slow to read the pipe,
 * and spend its CPU in those writes; a socket opened on fd 1 writes asynchronously, with
 * backpressure, like the other direction.
 */
function stdoutForBridging(): Writable {
  try {
    const stat = fstatSync(1);
    if (stat.isFIFO() || stat.isSocket()) return new NetSocket({ fd: 1, readable: false, writable: true });
  } catch {
    // Not openable this way: fall back to the usual stream.
  }
  return process.stdout;
}

function connectOnce(socketPath: string): Promise<Socket | undefined> {
  return new Promise((resolve) => {
    const socket = createConnection(socketPath);
    const onError = (): void => resolve(undefined);
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      resolve(socket);
    });
  });
}
