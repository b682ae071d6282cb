/**
 * The command transport as an rjob plugin: name this module in the config file and the `rjob` CLI
 * and its agent reach `cmd://NAME` targets through a command (`rjob invoke -c cmd://web1 -- …`,
 * also `--as-job`, `session new`, `enter`):
 *
 *     { "plugins": ["/path/to/examples/command-transport/dist/plugin.js"] }
 *
 * The command is `$RJOB_CMD_TEMPLATE` (words split on spaces, `{name}` replaced by NAME), by
 * default `docker exec -i {name} rjob agent --stdio`. The variable is read from the environment of
 * the command that names the target, as the agent gets it with `invoke --as-job`.
 */
import { definePlugin, ErrorCode, RjobError, type TargetTransport } from '@rjob/core';
import { type CommandTarget, commandTransport } from './command-transport.js';

/** The command run for a target when `RJOB_CMD_TEMPLATE` is not set. */
export const DEFAULT_TEMPLATE = 'docker exec -i {name} rjob agent --stdio';

const SCHEME = 'cmd://';

/** `cmd://NAME` as the command that reaches NAME's agent. */
export function commandFor(target: string, env: Record<string, string | undefined>): CommandTarget {
  const name = target.slice(SCHEME.length);
  if (!/^[\w.@:-]+$/.test(name)) {
    throw new RjobError(
      ErrorCode.InvalidArgument,
      `${target}: a cmd:// target is cmd://NAME (letters, digits, . _ - @ :)`,
    );
  }
  const words = (env.RJOB_CMD_TEMPLATE || DEFAULT_TEMPLATE).split(/\s+/).filter(Boolean);
  const [command, ...args] = words.map((word) => word.replaceAll('{name}', name));
  return { command: command!, args, env: { ...process.env, ...env } };
}

export const cmdTargets: TargetTransport = {
  name: 'command',
  scheme: SCHEME,
  accepts: (target) => target.startsWith(SCHEME),
  async resolve(target, settings) {
    return {
      transport: commandTransport,
      target: commandFor(target, settings.env),
      computerName: target.slice(SCHEME.length),
    };
  },
};

export default definePlugin({ name: 'command-transport', transports: [cmdTargets] });
