/** The error-code table of @rjob/transport-ws (`@rjob/transport-ws/codes`: no dependencies). */
/** Error codes of the WebSocket transport and listener. Stable: programs branch on them. */
export const WsErrorCode = {
  /** The server's certificate does not have the pinned SHA-256 fingerprint. */
  PinMismatch: 'ERR_WS_PIN_MISMATCH',
  /** Plain `ws://` to or on a non-loopback address without `insecure: true`. */
  Insecure: 'ERR_WS_INSECURE',
  /** The WebSocket opening handshake did not complete in time. */
  HandshakeTimeout: 'ERR_WS_HANDSHAKE_TIMEOUT',
  /** The server answered the upgrade with something other than 101 or 401. */
  UpgradeRefused: 'ERR_WS_UPGRADE_REFUSED',
  /** No agent answers at the address (connection refused, DNS, TLS failure). */
  Unreachable: 'ERR_WS_UNREACHABLE',
  /** The agent asks for a client certificate (mutual TLS) and refused the one given, or none was. */
  ClientCertRefused: 'ERR_WS_CLIENT_CERT_REFUSED',
  /** The peer stopped answering pings. */
  HeartbeatTimeout: 'ERR_WS_HEARTBEAT_TIMEOUT',
  /** The listener could not be set up (bad listen address, certificate generation failed). */
  ListenFailed: 'ERR_WS_LISTEN_FAILED',
} as const;

export type WsErrorCodeValue = (typeof WsErrorCode)[keyof typeof WsErrorCode];

/**
 * The codes that mean "could not get there" (the host, its port, its key, the login, the listener):
 * `rjob invoke` counts such a host as unreachable, and the CLI exits 4. Every code of this table is
 * one: a transport's errors are all about reaching the target.
 */
export const WS_UNREACHABLE_CODES: ReadonlySet<string> = new Set(Object.values(WsErrorCode));
