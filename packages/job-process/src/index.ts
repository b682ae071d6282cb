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
