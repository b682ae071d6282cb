/**
 * `@rjob/core`: what a program using rjob needs (the job model and JobManager, job types and the
 * transport contract, sessions, fan-out, errors). What only peers and links use is in subpaths:
 * `@rjob/core/protocol` (framing, messages, handshake, channel, method tables) and
 * `@rjob/core/codec` (value and record codecs).
 */
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
export { Job, type JobColumns, type JobStateChange } from './job/job.js';
export {
  type ChildSpec,
  type GetFilter,
  JobManager,
  type JobManagerOptions,
  type JobSelector,
  type ReceiveOptions,
  type ReceiveStreamOptions,
  type RemoveOptions,
  type RestoredIdentity,
  type RestoreGroupOptions,
  type RestoreOptions,
  type StartGroupOptions,
  type StartOptions,
  type WaitOptions,
  leavesOf,
  reasonRecord,
} from './job/job-manager.js';
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
export { ProtocolErrorCode, type ProtocolErrorCodeValue } from './protocol/protocol-errors.js';
// A session's options name it (SessionOptions.channel); the channel itself is in ./protocol.
export type { ReliableChannelOptions } from './protocol/reliable-channel.js';
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
  AgentPluginInfo,
  AgentProcessInfo,
  GroupChildRequest,
  GroupRequest,
  HostedSessionInfo,
  JobGroupInfo,
  JobInfo,
  ReceiveToFileResult,
  SessionAvailability,
  SessionInfo,
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
  type Invocation,
  type InvokeOptions,
  openSession,
  type CloseOptions,
  type ReceiveSessionOptions,
  type RemoteRecord,
  reviveError,
  Session,
  type SessionCredentials,
  type SessionOptions,
  type SessionStateChange,
  type Subscription,
  type SubscriptionHandlers,
} from './session/session.js';
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
