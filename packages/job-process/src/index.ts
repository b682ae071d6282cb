export type {
  FileDefinition,
  NativeProcessOptions,
  NodeChildDefinition,
  NodeChildOptions,
  ProcessCommonOptions,
  ProcessJobDefinition,
  ShellCommandDefinition,
} from './definitions.js';
export { PROCESS_JOB_TYPE_NAME, type ProcessJobTypeOptions, processJobType } from './process-job-type.js';
export {
  parseReasonRecord,
  REASON_CHANNEL_FD,
  type ReportedReason,
  reasonRecord,
} from './reason-channel.js';
