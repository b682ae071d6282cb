/**
 * `rjob-agent` (and `rjob agent`, which reuses {@link main}):
 *
 * - `daemon`: serve the per-user Unix socket until SIGTERM/SIGINT.
 * - `--stdio`: bridge stdin/stdout to the daemon, starting it when none answers (what SSH execs).
 * - `--stdio --no-daemon`: serve one link over stdio in this process (sessions end with it).
 * - `--socket PATH`, `--state-dir DIR`: override the defaults.
 */
import type { AgentServerOptions } from './server/agent-server-options.js';
import { fsp } from './fs/lazy-fs.js';
import { join } from 'node:path';
import { DAEMON_LOG_FILE, spawnDaemon, waitForSocket } from './doors/daemon-start.js';
import { socketIsLive } from './doors/socket-probe.js';
import { bridgeStdioToDaemon } from './doors/stdio-bridge.js';
import { AgentErrorCode } from './error-codes.js';
import { DAEMON_PID_FILE, defaultSocketPath, ensureStateDir, resolveStateDir } from './state-dir.js';

// Only the bridge's modules are loaded up front: `--stdio`, which sshd runs for every session, does
// not pay for loading the server. The daemon and `--no-daemon` import it when they start.
export {
  DAEMON_LOG_FILE,
  DAEMON_PID_FILE,
  defaultSocketPath,
  ensureStateDir,
  resolveStateDir,
  socketIsLive,
  spawnDaemon,
  waitForSocket,
};
// The agent's code table has no dependencies: the CLI names codes through it at no start-up cost.
export { AgentErrorCode } from './error-codes.js';

export interface MainOptions {
  /**
   * The command (after `process.execPath` and `process.execArgv`) that runs this entry, so the
   * `--stdio` bridge can start `<command> daemon`. Default `[process.argv[1]]`; the `rjob` CLI
   * passes `[its bin, 'agent']`.
   */
  selfCommand?: string[];
  /** Where messages for the user go. Default `process.stderr`. */
  stderr?: NodeJS.WritableStream;
  /**
   * Plugins of the daemon (`daemon` only): job types and transports (see AgentServerOptions),
   * made when the daemon starts. The `rjob` CLI gives its transports, so the daemon runs
   * `invoke --as-job` itself, and those of the modules its config file names. `log` writes a line
   * to the daemon's log (agent.log), e.g. a plugin that could not be loaded.
   */
  plugins?: (context: {
    log(line: string): void;
  }) =>
    | Pick<AgentServerOptions, 'jobTypes' | 'transports' | 'software' | 'pluginErrors'>
    | Promise<Pick<AgentServerOptions, 'jobTypes' | 'transports' | 'software' | 'pluginErrors'>>;
}

interface ParsedArgs {
  mode: 'daemon' | 'stdio' | 'serve-stdio' | 'help';
  socketPath?: string;
  stateDir?: string;
}

const USAGE = `usage: rjob-agent daemon [--socket PATH] [--state-dir DIR]
       rjob-agent --stdio [--no-daemon] [--socket PATH] [--state-dir DIR]
`;

/**
 * The daemon's first log line is `<ISO time> rjob-agent: starting (pid N)`: what marks, in
 * `agent.log`, where the running daemon's lines begin (see `rjob agent status`).
 */
export const DAEMON_START_LINE = 'starting (pid ';

export function parseAgentArgs(argv: readonly string[]): ParsedArgs | string {
  const out: ParsedArgs = { mode: 'help' };
  let stdio = false;
  let daemon = false;
  let noDaemon = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = (): string | undefined => {
      const next = argv[i + 1];
      i++;
      return next;
    };
    if (arg === 'daemon') daemon = true;
    else if (arg === '--stdio') stdio = true;
    else if (arg === '--no-daemon') noDaemon = true;
    else if (arg === '--socket' || arg === '--state-dir') {
      const v = value();
      if (!v) return `${arg} needs a value`;
      if (arg === '--socket') out.socketPath = v;
      else out.stateDir = v;
    } else if (arg.startsWith('--socket=')) out.socketPath = arg.slice('--socket='.length);
    else if (arg.startsWith('--state-dir=')) out.stateDir = arg.slice('--state-dir='.length);
    else if (arg === '--help' || arg === '-h') return out;
    else return `unknown argument: ${arg}`;
  }
  if (daemon && stdio) return 'daemon and --stdio cannot be combined';
  if (daemon) out.mode = 'daemon';
  else if (stdio) out.mode = noDaemon ? 'serve-stdio' : 'stdio';
  return out;
}

/** Runs the agent command line; resolves with the exit code once the agent is done. */
export async function main(argv: readonly string[], options: MainOptions = {}): Promise<number> {
  const stderr = options.stderr ?? process.stderr;
  const parsed = parseAgentArgs(argv);
  if (typeof parsed === 'string') {
    stderr.write(`rjob-agent: ${parsed}\n${USAGE}`);
    return 2;
  }
  if (parsed.mode === 'help') {
    stderr.write(USAGE);
    return argv.length === 0 ? 2 : 0;
  }
  const stateDir = await ensureStateDir(parsed.stateDir ?? resolveStateDir());
  const socketPath = parsed.socketPath ?? defaultSocketPath(stateDir);
  try {
    switch (parsed.mode) {
      case 'daemon':
        return await runDaemon(stateDir, socketPath, stderr, options.plugins);
      case 'serve-stdio': {
        const [{ AgentServer }, { serveStdio }] = await Promise.all([
          import('./server/agent-server.js'),
          import('./doors/stdio-door.js'),
        ]);
        keepRunningOnStrayErrors(stderr);
        // Its sessions end with this process: nothing to keep for a later agent.
        const server = new AgentServer({ stateDir, persist: false });
        await serveStdio(server, { onLinkError: (error) => logError(stderr, 'link refused', error) });
        await server.close();
        return 0;
      }
      case 'stdio': {
        const selfCommand = options.selfCommand ?? [process.argv[1]!];
        await bridgeStdioToDaemon({
          socketPath,
          startDaemon: () =>
            spawnDaemon({
              args: [
                ...process.execArgv,
                ...selfCommand,
                'daemon',
                '--state-dir',
                stateDir,
                '--socket',
                socketPath,
              ],
              stateDir,
            }),
        });
        return 0;
      }
    }
  } catch (error) {
    logError(stderr, 'failed', error);
    // As the rjob CLI's "refused": another agent already serves this state directory.
    return (error as { code?: unknown })?.code === AgentErrorCode.AgentRunning ? EXIT_AGENT_RUNNING : 1;
  }
}

/** Exit code of a daemon refused because another agent holds the state directory (ERR_AGENT_RUNNING). */
export const EXIT_AGENT_RUNNING = 6;

async function runDaemon(
  stateDir: string,
  socketPath: string,
  output: NodeJS.WritableStream,
  plugins: MainOptions['plugins'],
): Promise<number> {
  const [{ AgentServer }, { listenUnix }, { setIncidentSink }, { serveAgent, linkErrorLogger }] =
    await Promise.all([
      import('./server/agent-server.js'),
      import('./doors/unix-door.js'),
      import('./incidents.js'),
      import('./doors/serve.js'),
    ]);
  // The daemon's log (agent.log) gets a timestamp on every line, and every incident (damaged
  // state dropped, a full disk) as a line of its own.
  const stderr = timestampedLog(output);
  const log = (line: string): void => void stderr.write(`rjob-agent: ${line}\n`);
  log(`${DAEMON_START_LINE}${process.pid}, state ${stateDir})`);
  setIncidentSink(log);
  keepRunningOnStrayErrors(stderr);
  const server = new AgentServer({
    stateDir,
    ...(await plugins?.({ log })),
    // `rjob agent stop -c HOST`: the same clean shutdown as a SIGTERM.
    onStopRequested: () => process.kill(process.pid, 'SIGTERM'),
  });
  let link: string | undefined;
  await serveAgent(server, {
    stateDir,
    log,
    doors: [() => listenUnix(server, { socketPath, onLinkError: linkErrorLogger(log) })],
    async listening() {
      link = await linkStateDirSocket(stateDir, socketPath);
      log(`pid ${process.pid} listening on ${socketPath}`);
    },
    async closing() {
      if (link)
        await fsp()
          .unlink(link)
          .catch(() => {});
    },
  });
  return 0;
}

/**
 * A daemon listening in `$XDG_RUNTIME_DIR` links `<stateDir>/agent.sock` to its socket, so the one
 * path a client can know without asking a shell (`~/.local/state/rjob/agent.sock`, what the SSH
 * transport tries first) reaches it too. A stale socket or link there is replaced; a live agent's is
 * left alone. Returns the link made, if any.
 */
async function linkStateDirSocket(stateDir: string, socketPath: string): Promise<string | undefined> {
  const linkPath = join(stateDir, 'agent.sock');
  if (linkPath === socketPath) return undefined;
  try {
    const current = await fsp()
      .readlink(linkPath)
      .catch(() => undefined);
    if (current === socketPath) return linkPath;
    const existing = await fsp()
      .lstat(linkPath)
      .catch(() => undefined);
    if (existing) {
      const { socketIsLive } = await import('./doors/unix-door.js');
      if (!existing.isSymbolicLink() && !existing.isSocket()) return undefined;
      if (existing.isSocket() && (await socketIsLive(linkPath))) return undefined;
      await fsp().unlink(linkPath);
    }
    await fsp().symlink(socketPath, linkPath);
    return linkPath;
  } catch {
    // Only a shortcut: the daemon works without it.
    return undefined;
  }
}

interface LogStream {
  write(text: string): unknown;
}

/** Prefixes each line written with the current time (ISO 8601, UTC). */
function timestampedLog(output: NodeJS.WritableStream): LogStream {
  // A write the disk refuses is dropped, never an uncaught error that would be logged again.
  output.on?.('error', () => {});
  return {
    write(text: string) {
      const stamp = new Date().toISOString();
      const lines = text.endsWith('\n') ? text.slice(0, -1).split('\n') : text.split('\n');
      try {
        return output.write(`${lines.map((line) => `${stamp} ${line}`).join('\n')}\n`);
      } catch {
        // A log that cannot be written (a full disk) must not stop the agent.
        return false;
      }
    },
  };
}

/** A daemon hosts many users' sessions; one stray bug must not end them all. */
function keepRunningOnStrayErrors(stderr: LogStream): void {
  process.on('uncaughtException', (error) => logError(stderr, 'uncaught exception', error));
  process.on('unhandledRejection', (error) => logError(stderr, 'unhandled rejection', error));
}

function logError(stderr: LogStream, what: string, error: unknown): void {
  const code = (error as { code?: unknown })?.code;
  const message = error instanceof Error ? error.message : String(error);
  stderr.write(`rjob-agent: ${what}: ${typeof code === 'string' ? `${code}: ` : ''}${message}\n`);
}
