/**
 * `rjob agent plugins [--json] [--types]`: what the local agent loaded from the config file (its
 * job types and target transports, plugins' included) and the plugins it could not load, asked of
 * the agent itself (`agent.info`), which reads the config file when it starts.
 */
import { parse } from '../args.js';
import { jsonReplacer } from '../format.js';
import { helpFor } from '../help.js';
import { CliError, type CliIo, ExitCode, usageError } from '../io.js';
import { typeList } from '../job-types.js';
import { configFile, failureLine } from '../plugins.js';
import { withContext } from '../run-command.js';
import { CliErrorCode } from '../error-codes.js';

export async function agentPlugins(argv: readonly string[], io: CliIo, stateDir: string): Promise<number> {
  const { values, positionals } = parse(argv, { json: { type: 'boolean' }, types: { type: 'boolean' } });
  if (values.help) return helpFor('agent', io);
  if (positionals.length > 0) throw usageError(`unexpected argument ${positionals[0]}`);
  return withContext(io, stateDir, async (ctx) => {
    const session = await ctx.localSession();
    const info = await session.request('agent.info');
    if (info.jobTypes === undefined) {
      throw new CliError(
        ExitCode.Internal,
        CliErrorCode.AgentVersion,
        `the local agent (${info.software}) does not list its plugins; restart it with rjob agent stop`,
      );
    }
    const failures = info.pluginErrors ?? [];
    if (values.types) {
      // One name per line: what shell completion offers for --type.
      for (const type of info.jobTypes) io.stdout.write(`${[type.name, ...type.aliases].join('\n')}\n`);
    } else if (values.json) {
      const { jobTypes, transports, pluginErrors } = info;
      const config = configFile(io.env, io.cwd)?.path ?? null;
      io.stdout.write(`${JSON.stringify({ config, jobTypes, transports, pluginErrors }, jsonReplacer)}\n`);
    } else {
      const config = configFile(io.env, io.cwd);
      const transports = (info.transports ?? []).map((t) => (t.scheme ? `${t.name} (${t.scheme})` : t.name));
      io.stdout.write(
        `config file: ${config?.path ?? 'none ($RJOB_CONFIG, $XDG_CONFIG_HOME or $HOME unset)'}\n` +
          `job types: ${typeList(info)}\n` +
          `transports: ${transports.join(', ')}\n`,
      );
    }
    for (const failure of failures) io.stderr.write(`rjob: ${failureLine(failure)}\n`);
    return failures.length > 0 ? ExitCode.JobFailed : ExitCode.Ok;
  });
}
