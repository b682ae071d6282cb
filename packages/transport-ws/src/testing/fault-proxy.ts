/**
 * A TCP proxy on loopback that injects network faults on command, for tests of reconnection:
 * `cut` closes both sides (FIN), `reset` aborts them (RST), `stall` stops forwarding without
 * closing anything, as a dead route or a frozen NAT would, until it is resumed or cut.
 *
 * It forwards bytes, not messages, so it works for wss:// as well as any other TCP protocol: the
 * faults hit the TLS stream exactly where a real network would.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';

export interface FaultProxyOptions {
  /** Where connections are forwarded. */
  target: { host: string; port: number };
  /** Address the proxy listens on. Default 127.0.0.1 (loopback only: this is a test tool). */
  host?: string;
}

/** The connections that were open when {@link FaultProxy.stall} was called. */
export interface Stall {
  /** Forwards again, including what the stalled sockets received meanwhile. */
  resume(): void;
  /** Closes the stalled connections (both sides). */
  cut(): void;
}

export interface FaultProxy {
  readonly host: string;
  readonly port: number;
  /** Connections currently forwarded (or stalled). */
  readonly openConnections: number;
  /** Connections accepted since start. */
  readonly acceptedConnections: number;
  /** Ends every open connection on both sides with a FIN. New connections are still accepted. */
  cut(): void;
  /** Aborts every open connection on both sides with a TCP RST. */
  reset(): void;
  /**
   * Stops forwarding on every open connection, both ways, without closing it: neither end sees an
   * error; only a heartbeat can notice. Connections accepted later flow normally, so a client
   * that gives up on the stalled one can reconnect through the proxy.
   */
  stall(): Stall;
  /** Stops listening and drops every connection. */
  close(): Promise<void>;
}

interface Pair {
  client: Socket;
  upstream: Socket;
  stalled: boolean;
}

/** Starts a proxy to `options.target` on a free port. */
export async function startFaultProxy(options: FaultProxyOptions): Promise<FaultProxy> {
  const pairs = new Set<Pair>();
  let accepted = 0;

  const server: Server = createServer((client) => {
    accepted++;
    // Paused until the upstream connects, so nothing the client sends early is lost.
    client.pause();
    const upstream = createConnection({ host: options.target.host, port: options.target.port });
    const pair: Pair = { client, upstream, stalled: false };
    pairs.add(pair);
    const drop = (): void => {
      if (!pairs.delete(pair)) return;
      client.destroy();
      upstream.destroy();
    };
    // A failure of either side ends the pair the way a network would: the other side is closed.
    client.on('error', drop);
    upstream.on('error', drop);
    client.on('close', drop);
    upstream.on('close', drop);
    forward(pair, client, upstream);
    forward(pair, upstream, client);
    upstream.once('connect', () => {
      if (!pair.stalled) client.resume();
    });
  });

  /** Copies `from` to `to` with backpressure; a stalled pair copies nothing until resumed. */
  function forward(pair: Pair, from: Socket, to: Socket): void {
    from.on('data', (chunk: Buffer) => {
      if (!to.write(chunk)) from.pause();
    });
    to.on('drain', () => {
      if (!pair.stalled) from.resume();
    });
    from.on('end', () => to.end());
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: options.host ?? '127.0.0.1', port: 0 }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  if (!address || typeof address !== 'object') throw new Error('fault proxy: no address');

  const destroyAll = (how: (socket: Socket) => void): void => {
    for (const pair of [...pairs]) {
      pairs.delete(pair);
      how(pair.client);
      how(pair.upstream);
    }
  };
  const end = (socket: Socket): void => {
    // end() sends the FIN after what is already queued; destroySoon then frees the socket.
    socket.end();
    socket.destroySoon();
  };
  const rst = (socket: Socket): void => {
    // Not yet connected sockets cannot send an RST; destroy them plainly.
    if (socket.readyState === 'open') socket.resetAndDestroy();
    else socket.destroy();
  };

  return {
    host: address.address,
    port: address.port,
    get openConnections() {
      return pairs.size;
    },
    get acceptedConnections() {
      return accepted;
    },
    cut: () => destroyAll(end),
    reset: () => destroyAll(rst),
    stall() {
      const stalled = [...pairs];
      for (const pair of stalled) {
        pair.stalled = true;
        pair.client.pause();
        pair.upstream.pause();
      }
      return {
        resume() {
          for (const pair of stalled) {
            pair.stalled = false;
            pair.client.resume();
            pair.upstream.resume();
          }
        },
        cut() {
          for (const pair of stalled) {
            pairs.delete(pair);
            pair.client.destroy();
            pair.upstream.destroy();
          }
        },
      };
    },
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      destroyAll((socket) => socket.destroy());
      await closed;
    },
  };
}
