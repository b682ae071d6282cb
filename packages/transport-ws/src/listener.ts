/**
 * The agent's WebSocket door: `wss://HOST:PORT` (plain `ws://` only on loopback unless
 * `insecure`), bearer token checked in the HTTP upgrade handler, a fixed delay before every 401,
 * a deadline for connections that never finish their upgrade.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { ErrorCode, RjobError, type TransportChannel } from '@rjob/core';
import { DEFAULT_MAX_FRAME_BYTES, decodeMessage, encodeMessage } from '@rjob/core/protocol';
import { WebSocketServer } from 'ws';
import { createWsAuth, type WsAuth } from './auth.js';
import { WsErrorCode } from './errors.js';
import { isLoopbackHost, parseWsUrl } from './net-util.js';
import { certificateFingerprint, selfSignedCertificate } from './tls.js';
import { channelFromWebSocket, type WsChannelOptions } from './ws-channel.js';

export const DEFAULT_FAILURE_DELAY_MS = 250;
export const DEFAULT_UPGRADE_TIMEOUT_MS = 10_000;

/** What a door needs of the agent: `AgentServer` fits. */
export interface AttachTarget {
  readonly stateDir: string;
  attach(link: TransportChannel): Promise<unknown>;
}

export interface WsListenOptions extends Omit<WsChannelOptions, 'maxFrameBytes'> {
  /** `wss://HOST:PORT` or `ws://HOST:PORT` (port 0 picks one). */
  listen: string | URL;
  /** PEM certificate and key. Default: a self-signed pair kept in `<stateDir>/ws-tls/`. */
  cert?: string | Buffer;
  key?: string | Buffer;
  /**
   * Mutual TLS: CA certificates (PEM) that client certificates must chain to. With it, a client
   * without such a certificate is refused during the TLS handshake, before its token is read;
   * the token is still required. wss:// only. Default: no client certificate asked for.
   */
  clientCa?: string | Buffer | (string | Buffer)[];
  /** Tokens and their identities. Default: `createWsAuth({ stateDir })` (one generated token). */
  auth?: WsAuth;
  /** Allow plain ws:// on a non-loopback address. Default false. */
  insecure?: boolean;
  /** Wait before answering 401, in ms, whatever was wrong with the token. Default 250. */
  failureDelayMs?: number;
  /** A connection that has not finished TLS and the upgrade by then is dropped, in ms. Default 10 000. */
  upgradeTimeoutMs?: number;
  /** Largest frame (WebSocket message) in bytes. Default 16 MiB. */
  maxFrameBytes?: number;
  /** Called with each link that fails its handshake, and with listener errors (for logs). */
  onLinkError?(error: unknown): void;
}

export interface WsListener {
  /** The address actually bound, e.g. `wss://127.0.0.1:43117`. */
  readonly url: string;
  readonly port: number;
  /** SHA-256 fingerprint (lowercase hex) of the certificate served; undefined for ws://. */
  readonly fingerprint: string | undefined;
  /** `url#sha256=…`: what a client needs besides the token. */
  readonly pinnedUrl: string;
  readonly auth: WsAuth;
  /** Stops listening and drops this door's connections (sessions stay, Disconnected). */
  close(): Promise<void>;
}

/** Serves `server` on a WebSocket listener. */
export async function listenWs(server: AttachTarget, options: WsListenOptions): Promise<WsListener> {
  const url = parseWsUrl(options.listen);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const secure = url.protocol === 'wss:';
  if (!secure && !options.insecure && !isLoopbackHost(host)) {
    throw new RjobError(
      WsErrorCode.Insecure,
      `Refusing plain ws:// on ${host}: tokens would travel in clear. Use wss:// (or insecure: true).`,
      { details: { host } },
    );
  }
  if ((options.cert === undefined) !== (options.key === undefined)) {
    throw new RjobError(ErrorCode.InvalidArgument, 'Give both cert and key, or neither.');
  }
  if (options.clientCa !== undefined && !secure) {
    throw new RjobError(ErrorCode.InvalidArgument, 'clientCa (mutual TLS) needs a wss:// listener.');
  }
  const auth = options.auth ?? (await createWsAuth({ stateDir: server.stateDir }));
  const maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  const failureDelayMs = options.failureDelayMs ?? DEFAULT_FAILURE_DELAY_MS;
  const upgradeTimeoutMs = options.upgradeTimeoutMs ?? DEFAULT_UPGRADE_TIMEOUT_MS;
  const report = (error: unknown): void => options.onLinkError?.(error);

  let fingerprint: string | undefined;
  let http: Server;
  if (secure) {
    const pair =
      options.cert !== undefined && options.key !== undefined
        ? { cert: options.cert, key: options.key, fingerprint: certificateFingerprint(options.cert) }
        : await selfSignedCertificate(join(server.stateDir, 'ws-tls'), [host]);
    fingerprint = pair.fingerprint;
    http = createHttpsServer({
      cert: pair.cert,
      key: pair.key,
      handshakeTimeout: upgradeTimeoutMs,
      ...(options.clientCa === undefined
        ? {}
        : { ca: options.clientCa, requestCert: true, rejectUnauthorized: true }),
    });
  } else {
    http = createHttpServer();
  }

  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: maxFrameBytes });
  const sockets = new Set<Duplex>();
  const deadlines = new Map<Duplex, NodeJS.Timeout>();
  const track = (socket: Socket): void => {
    sockets.add(socket);
    const timer = setTimeout(() => socket.destroy(), upgradeTimeoutMs);
    timer.unref();
    deadlines.set(socket, timer);
    socket.once('close', () => {
      sockets.delete(socket);
      clearTimeout(deadlines.get(socket));
      deadlines.delete(socket);
    });
    socket.on('error', () => {});
  };
  http.on(secure ? 'secureConnection' : 'connection', track);
  http.on('tlsClientError', (error, socket) => {
    report(error);
    socket.destroy();
  });
  http.on('request', (_req, res) => {
    res.writeHead(426, { connection: 'close', upgrade: 'websocket' }).end('WebSocket only.\n');
  });
  http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const token = bearerToken(req.headers.authorization);
    const identity = auth.identify(token);
    if (identity === undefined || token === undefined) {
      // The same fixed delay for every refusal: no token, a wrong one, a malformed header.
      const timer = setTimeout(() => {
        if (!socket.destroyed) {
          socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
        }
      }, failureDelayMs);
      timer.unref();
      socket.once('close', () => clearTimeout(timer));
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      clearTimeout(deadlines.get(socket));
      deadlines.delete(socket);
      const link = channelFromWebSocket(ws, {
        maxFrameBytes,
        ...(options.highWaterMark === undefined ? {} : { highWaterMark: options.highWaterMark }),
        ...(options.lowWaterMark === undefined ? {} : { lowWaterMark: options.lowWaterMark }),
        ...(options.heartbeatMs === undefined ? {} : { heartbeatMs: options.heartbeatMs }),
      });
      server.attach(bindHelloToken(link, token)).catch(report);
    });
  });
  http.on('error', report);

  await new Promise<void>((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException): void =>
      reject(
        new RjobError(
          WsErrorCode.ListenFailed,
          `Cannot listen on ${url.host}: ${error.code ?? error.message}`,
          {
            cause: error,
          },
        ),
      );
    http.once('error', onError);
    http.listen({ host, port: Number(url.port || (secure ? 443 : 80)) }, () => {
      http.off('error', onError);
      resolve();
    });
  });
  const address = http.address();
  const port = typeof address === 'object' && address ? address.port : Number(url.port);
  const bound = `${url.protocol}//${host.includes(':') ? `[${host}]` : host}:${port}`;

  let closing: Promise<void> | undefined;
  return {
    url: bound,
    port,
    fingerprint,
    pinnedUrl: fingerprint ? `${bound}#sha256=${fingerprint}` : bound,
    auth,
    close() {
      closing ??= (async () => {
        const closed = new Promise<void>((resolve) => http.close(() => resolve()));
        for (const client of wss.clients) client.terminate();
        for (const socket of sockets) socket.destroy();
        for (const timer of deadlines.values()) clearTimeout(timer);
        wss.close();
        http.closeAllConnections?.();
        await closed;
      })();
      return closing;
    },
  };
}

function bearerToken(header: string | undefined): string | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return match?.[1];
}

/**
 * The identity of a WebSocket link is the one its upgrade token maps to. The token in the
 * client's `hello` is replaced by that token, so the agent's `authenticate` (see WsAuth) gives
 * the session exactly that identity, whatever the client put there.
 */
function bindHelloToken(link: TransportChannel, token: string): TransportChannel {
  let first = true;
  const rewrite = (frame: Uint8Array): Uint8Array => {
    if (!first) return frame;
    first = false;
    try {
      const message = decodeMessage(frame);
      if (message.type !== 'hello') return frame;
      return encodeMessage({ ...message, token });
    } catch {
      return frame; // the handshake refuses it with its own coded error
    }
  };
  return {
    ...link,
    onMessage: (handler) => link.onMessage((frame) => handler(rewrite(frame))),
  };
}
