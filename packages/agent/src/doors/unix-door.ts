/**
 * The per-user Unix socket door. The socket lives in a directory only its owner can enter (0700)
 * and is itself 0600, so reaching it proves being that user: that is the default authentication.
 */
import { mkdir, stat, unlink } from 'node:fs/promises';
import { chmod } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { channelFromDuplex, RjobError } from '@rjob/core';
import type { AgentServer } from '../server/agent-server.js';
import { AgentErrorCode } from '../error-codes.js';
import { socketIsLive } from './socket-probe.js';

export { defaultSocketPath } from '../state-dir.js';
export { socketIsLive };

export interface UnixDoorOptions {
  /** Where to listen. Its directory is created 0700 if missing and must be private if present. */
  socketPath: string;
  /** Largest frame body in bytes. Default 16 MiB. */
  maxFrameBytes?: number;
  /**
   * The identity of every link of this door, instead of the one the server's `authenticate` gives
   * (reaching the 0600 socket proves being its owner). For an agent whose `authenticate` is for
   * another door's tokens. Default: the server decides.
   */
  identity?: string;
  /** Called with each link that fails its handshake (for logs). Default: ignored. */
  onLinkError?(error: unknown): void;
}

export interface UnixDoor {
  readonly socketPath: string;
  /** Stops listening, drops the connections of this door and removes the socket file. */
  close(): Promise<void>;
}

/**
 * Serves `server` on a Unix socket. Refuses (ERR_AGENT_RUNNING) when a live agent already answers
 * on the path; removes a stale socket left by a dead one.
 */
export async function listenUnix(server: AgentServer, options: UnixDoorOptions): Promise<UnixDoor> {
  const { socketPath } = options;
  await preparePrivateDir(dirname(socketPath));
  await removeStaleSocket(socketPath);

  const sockets = new Set<Socket>();
  const listener: Server = createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    const link = channelFromDuplex(socket, {
      budget: server.frameBudget,
      ...(options.maxFrameBytes === undefined ? {} : { maxFrameBytes: options.maxFrameBytes }),
    });
    server
      .attach(link, options.identity === undefined ? {} : { identity: options.identity })
      .catch((error: unknown) => options.onLinkError?.(error));
  });
  await new Promise<void>((resolve, reject) => {
    listener.once('error', (error: NodeJS.ErrnoException) => {
      reject(
        error.code === 'EADDRINUSE'
          ? new RjobError(AgentErrorCode.AgentRunning, `Another agent is listening on ${socketPath}.`, {
              details: { socketPath },
            })
          : error,
      );
    });
    listener.listen(socketPath, () => resolve());
  });
  // The 0700 directory already keeps others out; 0600 is the second lock the design asks for.
  await chmod(socketPath, 0o600);
  listener.on('error', (error) => options.onLinkError?.(error));

  let closing: Promise<void> | undefined;
  return {
    socketPath,
    close() {
      closing ??= (async () => {
        await new Promise<void>((resolve) => {
          listener.close(() => resolve());
          for (const socket of sockets) socket.destroy();
        });
        await unlink(socketPath).catch(() => {});
      })();
      return closing;
    },
  };
}

async function preparePrivateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const info = await stat(dir);
  const uid = process.getuid?.();
  if (!info.isDirectory() || (uid !== undefined && info.uid !== uid) || (info.mode & 0o077) !== 0) {
    throw new RjobError(
      AgentErrorCode.SocketDirInsecure,
      `The socket directory ${dir} must be a directory owned by this user with mode 0700.`,
      { details: { dir, mode: (info.mode & 0o777).toString(8), uid: info.uid } },
    );
  }
}

async function removeStaleSocket(socketPath: string): Promise<void> {
  const info = await stat(socketPath).catch(() => undefined);
  if (!info) return;
  if (!info.isSocket()) {
    throw new RjobError(AgentErrorCode.AgentRunning, `${socketPath} exists and is not a socket.`, {
      details: { socketPath },
    });
  }
  if (await socketIsLive(socketPath)) {
    throw new RjobError(AgentErrorCode.AgentRunning, `Another agent is listening on ${socketPath}.`, {
      details: { socketPath },
    });
  }
  await unlink(socketPath).catch(() => {});
}
