export {
  createWsAuth,
  DEFAULT_TOKEN_FILE,
  readOrCreateToken,
  type WsAuth,
  type WsAuthOptions,
} from './auth.js';
export { WS_UNREACHABLE_CODES, WsErrorCode, type WsErrorCodeValue } from './errors.js';
export {
  type AttachTarget,
  DEFAULT_FAILURE_DELAY_MS,
  DEFAULT_UPGRADE_TIMEOUT_MS,
  listenWs,
  type WsListener,
  type WsListenOptions,
} from './listener.js';
export { isLoopbackHost, normalizeFingerprint } from './net-util.js';
export { type CertificatePair, certificateFingerprint, selfSignedCertificate } from './tls.js';
export {
  channelFromWebSocket,
  DEFAULT_HEARTBEAT_MS,
  DEFAULT_HIGH_WATER_MARK,
  DEFAULT_LOW_WATER_MARK,
  type WsChannelOptions,
} from './ws-channel.js';
export { DEFAULT_WS_HANDSHAKE_TIMEOUT_MS, type WsTransportOptions, wsTransport } from './ws-transport.js';
