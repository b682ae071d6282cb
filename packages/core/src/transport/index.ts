export {
  type ByteStream,
  type ChannelController,
  type ChannelDriver,
  type ConnectOptions,
  channelFromDuplex,
  createChannelController,
  type DuplexChannelOptions,
  defineTransport,
  type Transport,
  type TransportChannel,
  type TransportInit,
  toCloseReason,
} from './transport.js';
