/**
 * The stdio doors. `serveStdio` serves one link over this process's stdin/stdout (its sessions die
 * with the process). `bridgeStdioToDaemon` is what `rjob agent --stdio` runs under SSH or
 * `docker exec -i`: it copies bytes between stdio and the user's agent daemon socket, starting
 * the daemon when none answers, so sessions live in the daemon and outlive the connection.
 */
import type { Readable, Writable } from 'node:stream';
import { channelFromDuplex } from '@rjob/core';
import type { AgentServer } from '../server/agent-server.js';

export { type BridgeOptions, bridgeStdioToDaemon } from './stdio-bridge.js';

export interface StdioOptions {
  /** Default `process.stdin`. */
  input?: Readable;
  /** Default `process.stdout`. */
  output?: Writable;
  /** Largest frame body in bytes. Default 16 MiB. */
  maxFrameBytes?: number;
}

/** Serves one link over stdio; resolves when that link has closed. */
export function serveStdio(
  server: AgentServer,
  options: StdioOptions & { onLinkError?(error: unknown): void } = {},
): Promise<void> {
  const link = channelFromDuplex(
    { readable: options.input ?? process.stdin, writable: options.output ?? process.stdout },
    {
      budget: server.frameBudget,
      ...(options.maxFrameBytes === undefined ? {} : { maxFrameBytes: options.maxFrameBytes }),
    },
  );
  return new Promise((resolve) => {
    link.onClose(() => resolve());
    server.attach(link).catch((error: unknown) => options.onLinkError?.(error));
  });
}
