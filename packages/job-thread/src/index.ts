export {
  type ThreadJobDefinition,
  type ThreadJobLimits,
  type ThreadJobOptions,
  type ThreadJobType,
  threadJobType,
} from './thread-job-type.js';
export type { ThreadPoolOptions, ThreadPoolStats } from './thread-pool.js';
