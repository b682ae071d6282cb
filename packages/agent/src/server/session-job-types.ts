/**
 * The job types a session's JobManager uses. The agent owns one thread pool and one process
 * watchdog for all sessions; each session gets thin wrappers that (a) apply the session's working
 * directory and environment to process jobs and (b) have no `dispose`, because closing one
 * session's manager must not tear down the pool every other session shares.
 */
import { defineJobType, type JobType } from '@rjob/core';
import type { ProcessJobDefinition } from '@rjob/job-process';

export interface SessionContext {
  readonly cwd: string;
  readonly env: Readonly<Record<string, string>>;
}

/** The shared type, minus `dispose`. */
export function sharedJobType(type: JobType): JobType {
  const { dispose: _dispose, kind: _kind, ...init } = type;
  return defineJobType(init);
}

/**
 * Process jobs run in the session's cwd with its environment merged under the definition's own
 * `env`, unless the definition says otherwise (so `rjob start -s s1` behaves like a shell in s1).
 */
export function sessionProcessJobType(type: JobType<ProcessJobDefinition>, session: SessionContext): JobType {
  return defineJobType<ProcessJobDefinition>({
    name: type.name,
    ...(type.aliases ? { aliases: type.aliases } : {}),
    describe: (definition) => type.describe(definition),
    start(definition, context) {
      if (definition === null || typeof definition !== 'object') return type.start(definition, context);
      const withSession: ProcessJobDefinition = {
        ...definition,
        cwd: definition.cwd ?? session.cwd,
        env: { ...session.env, ...definition.env },
      };
      return type.start(withSession, context);
    },
  });
}
