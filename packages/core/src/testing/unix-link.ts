import { chmod } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { channelFromDuplex, type TransportChannel } from '../transport/transport.js';
import type { TransportPair } from './transport-conformance.js';

export interface AcceptOneLinkOptions {
  maxFrameBytes: number;
  /** chmod for the socket, e.g. 0o777 when another user's process connects. Default: as created. */
  mode?: number;
}

export interface AcceptedLink {
  /** The server end of the first connection, framed. */
  link: Promise<TransportChannel>;
  /** Stops listening. */
  close(): Promise<void>;
}

/**
 * Listens on a Unix socket path for one connection and frames it: the server end of a
 * conformance pair whose client end reaches the socket through the transport under test (a
 * command or an SSH exec running a small stdio-to-socket bridge).
 */
export async function acceptOneLink(path: string, options: AcceptOneLinkOptions): Promise<AcceptedLink> {
  const server = createServer();
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
  await new Promise<void>((resolve) => server.listen(path, resolve));
  if (options.mode !== undefined) await chmod(path, options.mode);
  return {
    link: accepted.then((socket) => channelFromDuplex(socket, { maxFrameBytes: options.maxFrameBytes })),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A conformance pair whose dispose closes both ends, then runs `cleanup`. */
export function linkPair(
  client: TransportChannel,
  server: TransportChannel,
  cleanup?: () => void | Promise<void>,
): TransportPair {
  return {
    client,
    server,
    async dispose() {
      client.close();
      server.close();
      await cleanup?.();
    },
  };
}
