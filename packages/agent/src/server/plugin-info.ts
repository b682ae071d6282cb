/**
 * What `agent.info` says of an agent's plugins: the job types it starts, its target transports in
 * the order they are tried, and the plugins that could not be loaded (so a client can tell why a
 * type it expected is missing).
 */
import type { AgentPluginInfo, JobType } from '@rjob/core';
import type { AgentTransport } from './remote-jobs.js';

/** A plugin named in a configuration that could not be loaded: which one, and its coded reason. */
export interface PluginError {
  /** The module as the configuration names it. */
  plugin: string;
  code: string;
  message: string;
}

export function pluginInfo(
  jobTypes: readonly JobType[],
  transports: readonly (AgentTransport & { scheme?: string })[],
  errors: readonly PluginError[],
): AgentPluginInfo {
  return {
    jobTypes: jobTypes.map((type) => ({ name: type.name, aliases: [...(type.aliases ?? [])] })),
    transports: transports.map((transport) => ({
      name: transport.name,
      ...(transport.scheme === undefined ? {} : { scheme: transport.scheme }),
    })),
    pluginErrors: errors.map(({ plugin, code, message }) => ({ plugin, code, message })),
  };
}
