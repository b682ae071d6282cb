export {
  decodeRecordEntries,
  decodeRecordPayload,
  encodeRecordEntries,
  encodeRecordPayload,
  encodeUnstampedEntry,
  isCompactPayload,
  isTextPayload,
  RECORD_ENTRY_HEADER_BYTES,
  stampHeader,
} from './codec/record-entries.js';
export { decodeValue, encodeValue, notCloneable } from './codec/value-codec.js';
export {
  deserializeError,
  ErrorCode,
  type ErrorCodeValue,
  RjobError,
  type RjobErrorOptions,
  type SerializedError,
  serializeError,
  toRjobError,
} from './errors.js';
export { Job, type JobStateChange } from './job/job.js';
export type {
  ChildSpec,
  GetFilter,
  JobManagerOptions,
  JobSelector,
  ReceiveOptions,
  ReceiveStreamOptions,
  RemoveOptions,
  StartGroupOptions,
  StartOptions,
  WaitOptions,
} from './job/job-manager-options.js';
export { JobManager } from './job/job-manager.js';
export { leavesOf, reasonRecord } from './job/job-records.js';
export {
  defineJobType,
  type JobContext,
  type JobOutcome,
  type JobRun,
  type JobType,
  type JobTypeInit,
  withFinish,
} from './job/job-type.js';
export { estimateSize } from './job/record-buffer.js';
export { isStreamName, type JobRecord, type ProgressData, STREAMS, type StreamName } from './job/records.js';
export { canTransition, isTerminal, JobState, TERMINAL_STATES } from './job/states.js';
export {
  CHILD_ENTRY_PATH,
  channelFromChild,
  channelFromPort,
  DEFAULT_STOP_GRACE_MS,
  describeWork,
  type HostChannel,
  type HostMessage,
  type RunnerMessage,
  toWorkSpec,
  WORKER_ENTRY_URL,
  type WorkContext,
  type WorkDefinition,
  type WorkFunction,
  WorkSession,
  type WorkSessionOptions,
  type WorkSpec,
} from './runtime/host.js';
export {
  assertFrameSize,
  DEFAULT_FRAME_BUDGET_BYTES,
  DEFAULT_MAX_FRAME_BYTES,
  encodeFrame,
  FRAME_HEADER_BYTES,
  FrameBudget,
  FrameDecoder,
  type FramingOptions,
} from './protocol/framing.js';
export {
  type ClientHandshakeOptions,
  type ClientHandshakeResult,
  clientHandshake,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  type ServerHandshakeOptions,
  type ServerHandshakeResult,
  type SessionHandle,
  serverHandshake,
} from './protocol/handshake.js';
export {
  type AckMessage,
  type CloseMessage,
  type ControlMessage,
  type CreditMessage,
  decodeMessage,
  type ErrorMessage,
  type EventMessage,
  encodeMessage,
  type HandshakeMessage,
  type HelloMessage,
  isSequenced,
  MESSAGE_LIMITS,
  type Message,
  type MessageType,
  type OpenedMessage,
  type OpenMessage,
  PROTOCOL_VERSION,
  type Payload,
  type PingMessage,
  type PongMessage,
  type RelayRequest,
  type RequestMessage,
  type ResponseMessage,
  type ResumedMessage,
  type ResumeMessage,
  SUPPORTED_PROTOCOL_VERSIONS,
  type SequencedMessage,
  validateMessage,
  type WelcomeMessage,
} from './protocol/messages.js';
export { ProtocolErrorCode, type ProtocolErrorCodeValue, protocolError } from './protocol/protocol-errors.js';
export {
  type MessageHandler,
  ReliableChannel,
  type ReliableChannelOptions,
  type ReliableChannelState,
  type ReliableChannelStats,
  type TakeoverEvent,
} from './protocol/reliable-channel.js';
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
} from './transport/transport.js';
export type {
  GroupChildRequest,
  GroupRequest,
  HostedOpenRequest,
  HostedSessionInfo,
  JobGroupInfo,
  JobInfo,
  MethodParams,
  MethodResult,
  ReceiveToFileResult,
  SessionAvailability,
  SessionEvent,
  SessionEvents,
  SessionInfo,
  AgentPluginInfo,
  AgentProcessInfo,
  SessionMethod,
  SessionMethods,
  SessionState,
  WireSelector,
  WorkRequest,
} from './session/rpc.js';
export {
  DEFAULT_THROTTLE_LIMIT,
  type DisconnectedFanOutResult,
  type FanOutInvocation,
  type FanOutResult,
  type InvokeManyDisconnectedOptions,
  type InvokeManyOptions,
  invokeMany,
} from './session/fan-out.js';
export {
  RemoteJobManager,
  type RemoteJobInfo,
  type RemoteStartOptions,
  reviveJobInfo,
} from './session/remote-job-manager.js';
export { describeWorkRequest, type RemoteJobDefinition, remoteJobType } from './session/remote-job-type.js';
export {
  connectSession,
  DEFAULT_INITIAL_BACKOFF_MS,
  DEFAULT_MAX_BACKOFF_MS,
  DEFAULT_RECONNECT_WINDOW_MS,
  openSession,
  reviveError,
  Session,
} from './session/session.js';
export type {
  CloseOptions,
  Invocation,
  InvokeOptions,
  ReceiveSessionOptions,
  RemoteRecord,
  SessionCredentials,
  SessionOptions,
  SessionStateChange,
  Subscription,
  SubscriptionHandlers,
} from './session/session-types.js';
export {
  connectFailed,
  isFatalConnectError,
  isPermanentConnectError,
  SessionErrorCode,
  type SessionErrorCodeValue,
  UNREACHABLE_CODES,
} from './session/session-errors.js';
export { unixSocketTransport } from './transport/unix-transport.js';
export { definePlugin, type RjobPlugin, type TargetSettings, type TargetTransport } from './plugin.js';
