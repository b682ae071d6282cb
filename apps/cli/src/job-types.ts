/**
 * `--type NAME`: the agent's job types, asked of the agent itself (`agent.info`), so a job type a
 * plugin adds (the config file's, plugins.ts) is started like the built-in ones and an unknown
 * name is refused with the list of those registered.
 */
import { type AgentProcessInfo, ErrorCode, type Session } from '@rjob/core';
import { failureLine } from './plugins.js';
import { CliError, ExitCode } from './io.js';

/** The types every agent has, by the names `--type` takes (`process` and `thread`, or their type names). */
const BUILT_IN: Record<string, 'process' | 'thread'> = {
  process: 'process',
  backgroundjob: 'process',
  thread: 'thread',
  threadjob: 'thread',
};

/** `process` or `thread` for a built-in type's name or alias (any case), else undefined. */
export function builtInType(type: string): 'process' | 'thread' | undefined {
  return BUILT_IN[type.toLowerCase()];
}

/** The agent's job types as `--type` shows them: `name (alias, …)`. */
export function typeList(info: Pick<AgentProcessInfo, 'jobTypes'>): string {
  return (info.jobTypes ?? [])
    .map((type) => (type.aliases.length > 0 ? `${type.name} (${type.aliases.join(', ')})` : type.name))
    .join(', ');
}

/**
 * Refuses a type the session's agent does not start (ERR_UNKNOWN_JOB_TYPE, exit 2), naming those it
 * does and the plugins that could not be loaded. An agent too old to list its types is not asked:
 * its own `job.start` answers.
 */
export async function checkJobType(session: Session<unknown>, type: string): Promise<void> {
  const info = await session.request('agent.info');
  if (info.jobTypes === undefined) return;
  const wanted = type.toLowerCase();
  const known = info.jobTypes.some((each) =>
    [each.name, ...each.aliases].some((name) => name.toLowerCase() === wanted),
  );
  if (known) return;
  const failed = (info.pluginErrors ?? []).map((failure) => `; ${failureLine(failure)}`).join('');
  throw new CliError(
    ExitCode.Usage,
    ErrorCode.UnknownJobType,
    `no job type named ${type}; the agent has ${typeList(info)}${failed}`,
  );
}
