import {
  describeWork,
  defineJobType,
  ErrorCode,
  type JobType,
  RjobError,
  toWorkSpec,
  type WorkDefinition,
} from '@rjob/core';
import { ThreadPool, type ThreadPoolOptions, type ThreadPoolStats } from './thread-pool.js';

/** Per-job settings, on top of the work itself. */
export interface ThreadJobLimits {
  /** Fails the job with ERR_JOB_TIMEOUT (`timedOut: true`) after this long. Default: the type's `timeoutMs`. */
  timeoutMs?: number;
  /**
   * Heap limit for the job's worker (`resourceLimits.maxOldGenerationSizeMb`). A job that exceeds
   * it fails with ERR_JOB_OUT_OF_MEMORY and its worker is replaced. Such a job runs on a worker
   * made with that limit, so it may pay for a cold start. Default: none.
   */
  maxOldGenerationSizeMb?: number;
}

/**
 * What `jobs.start('thread', definition)` takes: `{ fn }`, `{ module, export? }` or `{ eval }`, plus
 * `args` and {@link ThreadJobLimits}. A `fn` crosses as source text: it cannot see variables from
 * where it was written (pass them in `args`).
 */
export type ThreadJobDefinition = WorkDefinition & ThreadJobLimits;

export interface ThreadJobOptions extends ThreadPoolOptions {
  /** Default timeout for jobs that do not set one. Default: none. */
  timeoutMs?: number;
}

export interface ThreadJobType extends JobType<ThreadJobDefinition> {
  /** Starts the pool's warm workers now and resolves once they can take work. */
  warmUp(): Promise<void>;
  /** Worker and queue counts, for diagnostics. */
  stats(): ThreadPoolStats;
}

/** The ThreadJob type (alias `thread`): JavaScript work on a warm pool of worker threads. */
export function threadJobType(options: ThreadJobOptions = {}): ThreadJobType {
  const pool = new ThreadPool(options);
  const type = defineJobType<ThreadJobDefinition>({
    name: 'ThreadJob',
    aliases: ['thread'],
    describe: (definition) => describeWork(definition),
    start(definition, context) {
      const spec = toWorkSpec(definition);
      const timeoutMs = definition.timeoutMs ?? options.timeoutMs;
      const mb = definition.maxOldGenerationSizeMb;
      if (timeoutMs !== undefined && !(timeoutMs >= 0))
        throw invalid(`timeoutMs must be zero or more, got ${timeoutMs}.`);
      if (mb !== undefined && !(Number.isFinite(mb) && mb > 0)) {
        throw invalid(`maxOldGenerationSizeMb must be a positive number, got ${mb}.`);
      }
      return pool.start({
        spec,
        context,
        ...(timeoutMs === undefined ? {} : { timeoutMs }),
        ...(mb === undefined ? {} : { maxOldGenerationSizeMb: mb }),
      });
    },
    dispose: () => pool.dispose(),
  });
  return Object.assign(type, { warmUp: () => pool.warmUp(), stats: () => pool.stats() });
}

function invalid(message: string): RjobError {
  return new RjobError(ErrorCode.InvalidArgument, message);
}
