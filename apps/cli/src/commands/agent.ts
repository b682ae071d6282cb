/** `rjob agent …`: manage the local agent daemon; `daemon` and `--stdio` are @rjob/agent's own. */
import { helpFor } from '../help.js';
import { CliError, type CliIo, ExitCode, usageError } from '../io.js';
import { statePaths } from '../state.js';
import { CliErrorCode } from '../error-codes.js';

// Imports are light up front: sshd runs `rjob agent --stdio` for every session, and it needs only
// the agent's bridge (`@rjob/agent/cli`). The other verbs load what they use.

export async function agent(argv: readonly string[], io: CliIo): Promise<number> {
  let stateDirFlag: string | undefined;
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--state-dir') {
      stateDirFlag = argv[++i];
      if (stateDirFlag === undefined) throw usageError('--state-dir needs a value');
    } else if (arg.startsWith('--state-dir=')) stateDirFlag = arg.slice('--state-dir='.length);
    else rest.push(arg);
  }
  const paths = statePaths(io, stateDirFlag);
  if (rest.some((a) => a === '--listen' || a.startsWith('--listen='))) {
    return (await import('./agent-listen.js')).agentListen(rest, io, paths);
  }
  const [sub, ...more] = rest;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') return helpFor('agent', io);
  if (sub === 'daemon' || sub === '--stdio') {
    // Same state directory and socket rules as every other verb, so a sandboxed `rjob` and the
    // daemon it starts (or the bridge SSH runs) agree on where the agent is.
    const extra =
      rest.includes('--socket') || rest.some((a) => a.startsWith('--socket='))
        ? []
        : ['--socket', paths.socketPath];
    const { main: agentMain } = await import('@rjob/agent/cli');
    return agentMain([...rest, '--state-dir', paths.stateDir, ...extra], {
      selfCommand: [process.argv[1]!, 'agent'],
      stderr: io.stderr,
      // The daemon runs `invoke --as-job` itself, through the transports this CLI knows (loaded
      // on the first job that needs them). The `--stdio` bridge needs none of it.
      ...(sub === 'daemon'
        ? {
            plugins: async ({ log }: { log(line: string): void }) => {
              const [{ cliTransports }, { failureLine, loadPlugins }] = await Promise.all([
                import('../agent-transports.js'),
                import('../plugins.js'),
              ]);
              // The config file's plugins, read once at start: a changed file takes effect when
              // the agent restarts (rjob agent stop). One that fails is left out, and said.
              const loaded = await loadPlugins(io);
              if (loaded.configPath !== undefined) {
                const names = [...loaded.jobTypes, ...loaded.transports].map((each) => each.name);
                log(`plugins from ${loaded.configPath}: ${names.join(', ') || 'none'}`);
              }
              for (const failure of loaded.failures) log(failureLine(failure));
              const socketIndex = rest.indexOf('--socket');
              const socketFlag =
                socketIndex >= 0
                  ? rest[socketIndex + 1]
                  : rest.find((a) => a.startsWith('--socket='))?.slice('--socket='.length);
              const { agentSoftware } = await import('../version.js');
              return {
                transports: cliTransports(
                  { ...paths, socketPath: socketFlag ?? paths.socketPath },
                  loaded.transports,
                ),
                jobTypes: loaded.jobTypes,
                pluginErrors: loaded.failures,
                // Which rjob started it: a later rjob of another version notices (context.ts).
                software: await agentSoftware(),
              };
            },
          }
        : {}),
    });
  }
  if (sub === 'plugins') {
    return (await import('./agent-plugins.js')).agentPlugins(more, io, paths.stateDir);
  }
  if ((sub === 'status' || sub === 'stop') && more.length > 0) {
    // `-c HOST…`: the daemons on other hosts (agent-remote.ts).
    return (await import('./agent-remote.js')).agentRemote(sub, more, io, paths);
  }
  if (more.length > 0) throw usageError(`unexpected argument ${more[0]}`);
  const { daemonPid, ensureAgent, stopAgent } = await import('../local-agent.js');
  switch (sub) {
    case 'start': {
      await ensureAgent(paths, io);
      io.stdout.write(`agent running (pid ${(await daemonPid(paths)) ?? '?'}) on ${paths.socketPath}\n`);
      return ExitCode.Ok;
    }
    case 'stop': {
      const stopped = await stopAgent(paths);
      io.stdout.write(stopped ? 'agent stopped\n' : 'agent was not running\n');
      return ExitCode.Ok;
    }
    case 'status': {
      const { socketIsLive } = await import('@rjob/agent');
      if (await socketIsLive(paths.socketPath)) {
        const pid = await daemonPid(paths);
        io.stdout.write(`agent running (pid ${pid ?? '?'}) on ${paths.socketPath}\n`);
        // What it dropped (damaged state) or paused (a full disk) since it started.
        const { incidentLines } = await import('../agent-incidents.js');
        const lines = await incidentLines(paths.stateDir, pid);
        if (lines.length > 0) {
          io.stdout.write(`since the agent started (see ${lines.logPath}):\n`);
          for (const line of lines) io.stdout.write(`  ${line}\n`);
        }
        return ExitCode.Ok;
      }
      io.stdout.write(`agent not running (socket ${paths.socketPath})\n`);
      return ExitCode.NotFound;
    }
    default:
      throw new CliError(ExitCode.Usage, CliErrorCode.Usage, `unknown agent command ${sub}`);
  }
}
