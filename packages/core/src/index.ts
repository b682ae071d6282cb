export { decodeValue, encodeValue, findUncloneable, notCloneable } from './codec/value-codec.js';
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
export {
  type ChildSpec,
  type GetFilter,
  JobManager,
  type JobManagerOptions,
  type JobSelector,
  type ReceiveOptions,
  type ReceiveStreamOptions,
  type RemoveOptions,
  type StartGroupOptions,
  type StartOptions,
  type WaitOptions,
} from './job/job-manager.js';
export {
  defineJobType,
  type JobContext,
  type JobOutcome,
  type JobRun,
  type JobType,
  type JobTypeInit,
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
