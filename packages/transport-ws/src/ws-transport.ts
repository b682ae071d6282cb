/**
 * The client: `wss://host:port` (or loopback `ws://`) to an rjob agent's WebSocket listener,
 * with a bearer token and, for a self-signed agent certificate, a pinned SHA-256 fingerprint.
 */
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import {
  defineTransport,
  ProtocolErrorCode,
  RjobError,
  type Transport,
  type TransportChannel,
} from '@rjob/core';
import { WebSocket } from 'ws';
import { WsErrorCode } from './errors.js';
import { fingerprintHex, isLoopbackHost, normalizeFingerprint, parseWsUrl } from './net-util.js';
import { channelFromWebSocket, type WsChannelOptions } from './ws-channel.js';

export const DEFAULT_WS_HANDSHAKE_TIMEOUT_MS = 10_000;

export interface WsTransportOptions extends Omit<WsChannelOptions, 'maxFrameBytes'> {
  /** Bearer token sent in the upgrade request. */
  token?: string;
  /** File holding the bearer token (read on each connect, trimmed). Used when `token` is absent. */
  tokenFile?: string;
  /**
   * SHA-256 fingerprint of the agent's certificate (hex, colons optional). With a pin the
   * certificate chain is not checked; the fingerprint is. A `#sha256=…` URL fragment does the same.
   */
  pin?: string;
  /** CA certificates (PEM) trusted for wss:// without a pin. Default: Node's bundle. */
  ca?: string | Buffer | (string | Buffer)[];
  /** Client certificate and key (PEM) for an agent that asks for mutual TLS (`clientCa`). */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** Allow plain ws:// to a non-loopback host. Default false. */
  insecure?: boolean;
  /** Time for TCP + TLS + the WebSocket upgrade, in ms. Default 10 000. */
  handshakeTimeoutMs?: number;
}

/** A WebSocket transport for `openSession(wsTransport(options), 'wss://host:port#sha256=…')`. */
export function wsTransport(options: WsTransportOptions = {}): Transport<string | URL> {
  return defineTransport<string | URL>({
    name: 'ws',
    async connect(target, { maxFrameBytes, signal }) {
      const url = parseWsUrl(target);
      const fragmentPin = /^#sha256=(.+)$/i.exec(url.hash)?.[1];
      url.hash = '';
      const pinSource = options.pin ?? (fragmentPin ? decodeURIComponent(fragmentPin) : undefined);
      const pin = pinSource === undefined ? undefined : normalizeFingerprint(pinSource);
      if (url.protocol === 'ws:' && !options.insecure && !isLoopbackHost(url.hostname)) {
        throw new RjobError(
          WsErrorCode.Insecure,
          `Refusing plain ws:// to ${url.hostname}: the token would travel in clear. Use wss:// (or insecure: true).`,
          // Permanent: retrying the same URL cannot make it secure, so reconnecting stops.
          { details: { host: url.hostname, permanent: true } },
        );
      }
      const token =
        options.token ??
        (options.tokenFile === undefined ? undefined : (await readFile(options.tokenFile, 'utf8')).trim());
      const timeoutMs = options.handshakeTimeoutMs ?? DEFAULT_WS_HANDSHAKE_TIMEOUT_MS;
      const deadline = AbortSignal.timeout(timeoutMs);
      const abort = signal ? AbortSignal.any([signal, deadline]) : deadline;
      const describe = url.host;

      const clientCert = {
        ...(options.cert === undefined ? {} : { cert: options.cert }),
        ...(options.key === undefined ? {} : { key: options.key }),
      };
      let socket: TLSSocket | undefined;
      if (url.protocol === 'wss:' && pin !== undefined) {
        // Verified before a byte of HTTP (and so the token) is sent. Node only calls
        // checkServerIdentity when the chain verified, which a self-signed certificate never does,
        // so the pin is checked here on the finished TLS handshake instead.
        socket = await pinnedTls(url, pin, abort, describe, clientCert);
      }
      return new Promise<TransportChannel>((resolve, reject) => {
        const ws = new WebSocket(url, {
          perMessageDeflate: false,
          maxPayload: maxFrameBytes,
          handshakeTimeout: timeoutMs,
          headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
          ...(socket ? { createConnection: () => socket } : {}),
          ...(options.ca === undefined ? {} : { ca: options.ca }),
          ...clientCert,
        });
        let settled = false;
        const settle = (error: RjobError | undefined): void => {
          if (settled) return;
          settled = true;
          abort.removeEventListener('abort', onAbort);
          if (!error) {
            resolve(
              channelFromWebSocket(ws, {
                maxFrameBytes,
                ...pick(options, 'highWaterMark', 'lowWaterMark', 'heartbeatMs'),
              }),
            );
            return;
          }
          ws.on('error', () => {});
          ws.terminate();
          socket?.destroy();
          reject(error);
        };
        const onAbort = (): void =>
          settle(
            signal?.aborted
              ? new RjobError(WsErrorCode.Unreachable, `Connection to ${describe} aborted.`, {
                  cause: signal.reason,
                })
              : new RjobError(
                  WsErrorCode.HandshakeTimeout,
                  `No WebSocket handshake from ${describe} in ${timeoutMs} ms.`,
                ),
          );
        abort.addEventListener('abort', onAbort, { once: true });
        ws.once('open', () => settle(undefined));
        ws.once('unexpected-response', (_req, res) => {
          const status = res.statusCode ?? 0;
          res.resume();
          settle(
            status === 401
              ? new RjobError(ProtocolErrorCode.Unauthorized, `${describe} refused the token (401).`, {
                  // The same token will be refused again: reconnecting stops until it is fixed.
                  details: { status, permanent: true },
                })
              : new RjobError(
                  WsErrorCode.UpgradeRefused,
                  `${describe} answered the upgrade with ${status}.`,
                  {
                    details: { status },
                  },
                ),
          );
        });
        ws.once('error', (error: Error & { code?: string }) => {
          settle(
            clientCertRefused(error)
              ? certificateRefused(describe, error)
              : error.message.includes('handshake has timed out')
                ? new RjobError(WsErrorCode.HandshakeTimeout, `No WebSocket handshake from ${describe}.`, {
                    cause: error,
                  })
                : new RjobError(
                    WsErrorCode.Unreachable,
                    `Cannot reach ${describe}: ${error.code ?? error.message}`,
                    {
                      cause: error,
                    },
                  ),
          );
        });
      });
    },
  });
}

/**
 * The agent wants a client certificate and did not accept ours (or we sent none). With TLS 1.3
 * the client finishes its handshake first and only hears the server's alert afterwards, so this
 * shows up as an error of the first read, not of the handshake.
 */
function clientCertRefused(error: Error & { code?: string }): boolean {
  return /ALERT_(CERTIFICATE_REQUIRED|BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_UNKNOWN)/.test(error.code ?? '');
}

function certificateRefused(describe: string, error: Error): RjobError {
  return new RjobError(
    WsErrorCode.ClientCertRefused,
    `${describe} refused the client certificate (mutual TLS): ${error.message}`,
    // Permanent: the same certificate will be refused again.
    { cause: error, details: { permanent: true } },
  );
}

function pinnedTls(
  url: URL,
  pin: string,
  signal: AbortSignal,
  describe: string,
  clientCert: { cert?: string | Buffer; key?: string | Buffer },
): Promise<TLSSocket> {
  const host = url.hostname.replace(/^\[|\]$/g, '');
  return new Promise<TLSSocket>((resolve, reject) => {
    const socket = tlsConnect({
      host,
      port: Number(url.port || 443),
      ...(isIP(host) ? {} : { servername: host }),
      rejectUnauthorized: false,
      ALPNProtocols: ['http/1.1'],
      ...clientCert,
    });
    const fail = (error: RjobError): void => {
      signal.removeEventListener('abort', onAbort);
      socket.destroy();
      reject(error);
    };
    const onAbort = (): void =>
      fail(
        new RjobError(WsErrorCode.HandshakeTimeout, `No TLS handshake from ${describe}.`, {
          cause: signal.reason,
        }),
      );
    signal.addEventListener('abort', onAbort, { once: true });
    socket.once('error', (error: Error & { code?: string }) =>
      fail(
        clientCertRefused(error)
          ? certificateRefused(describe, error)
          : new RjobError(
              WsErrorCode.Unreachable,
              `Cannot reach ${describe}: ${error.code ?? error.message}`,
              {
                cause: error,
              },
            ),
      ),
    );
    socket.once('secureConnect', () => {
      const cert = socket.getPeerCertificate();
      const seen = cert?.fingerprint256 ? fingerprintHex(cert.fingerprint256) : '';
      if (seen !== pin) {
        fail(
          new RjobError(
            WsErrorCode.PinMismatch,
            `The certificate of ${describe} does not match the pinned fingerprint.`,
            {
              // Permanent: another attempt meets the same certificate (or the same impostor).
              details: { expected: pin, actual: seen, permanent: true },
            },
          ),
        );
        return;
      }
      signal.removeEventListener('abort', onAbort);
      socket.removeAllListeners('error');
      resolve(socket);
    });
  });
}

function pick<T extends object, K extends keyof T>(source: T, ...keys: K[]): Partial<Pick<T, K>> {
  const out: Partial<Pick<T, K>> = {};
  for (const key of keys) if (source[key] !== undefined) out[key] = source[key];
  return out;
}
