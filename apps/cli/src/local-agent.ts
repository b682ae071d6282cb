/**
 * The user's local agent daemon: local jobs live there (DESIGN §4, detached work), so they outlive
 * the CLI process that started them. The CLI starts it on first use, as the agent's `--stdio`
 * bridge does, and talks to it over its Unix socket.
 */
import { fsp } from './lazy-fs.js';
import { join } from 'node:path';
// The agent's light entry (node built-ins only), not the whole agent: `rjob get` starts quickly.
import {
  DAEMON_LOG_FILE,
  DAEMON_PID_FILE,
  ensureStateDir,
  socketIsLive,
  spawnDaemon,
  waitForSocket,
} from '@rjob/agent/cli';
import { CliError, type CliIo, ExitCode } from './io.js';
import type { StatePaths } from './state.js';
import { CliErrorCode } from './error-codes.js';
import { ErrorCode } from '@rjob/core/errors';

/** How long a freshly spawned daemon gets to answer on its socket. */
const DAEMON_START_TIMEOUT_MS = 15_000;
const POLL_INTERVAL_MS = 50;
/** How long `rjob agent stop` waits for a clean shutdown before it kills the daemon's group. */
const STOP_TIMEOUT_MS = 30_000;

/** The node arguments (after `process.execPath`) that run this CLI again. */
export function selfCommand(io: CliIo): string[] {
  return io.selfCommand ?? [...process.execArgv, process.argv[1]!];
}

/** Variables a job running this CLI needs from the caller's environment to reach hosts the same way. */
const SELF_PASSED_ENV = /^(RJOB_|SSH_AUTH_SOCK$|HOME$|NO_COLOR$|XDG_)/;

/**
 * The environment for a job in the local agent that runs this CLI again: the caller's rjob, SSH and
 * XDG variables, and this invocation's state directory and socket, so the job finds the same
 * stored sessions and agent even when they came from flags rather than the environment.
 */
export function selfEnv(io: CliIo, paths: StatePaths): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(io.env)) {
    if (value !== undefined && SELF_PASSED_ENV.test(key)) env[key] = value;
  }
  env.RJOB_STATE_DIR = paths.stateDir;
  env.RJOB_SOCKET = paths.socketPath;
  return env;
}

/** Resolves once an agent answers on the socket, starting the daemon when none does. */
export async function ensureAgent(paths: StatePaths, io: CliIo): Promise<void> {
  if (await socketIsLive(paths.socketPath)) return;
  await ensureStateDir(paths.stateDir);
  // Detached into its own process group; racing starts are harmless (one daemon takes the state
  // directory's lock, the others exit, and every command reaches the one that won).
  spawnDaemon({
    args: [
      ...selfCommand(io),
      'agent',
      'daemon',
      '--state-dir',
      paths.stateDir,
      '--socket',
      paths.socketPath,
    ],
    stateDir: paths.stateDir,
    env: io.env,
    cwd: paths.stateDir,
  });
  if (await waitForSocket(paths.socketPath, DAEMON_START_TIMEOUT_MS)) return;
  throw new CliError(
    ExitCode.Unreachable,
    ErrorCode.AgentUnreachable,
    `the local agent did not start on ${paths.socketPath}; see ${join(paths.stateDir, DAEMON_LOG_FILE)}`,
  );
}

export async function daemonPid(paths: StatePaths): Promise<number | undefined> {
  try {
    const pid = Number.parseInt(await fsp().readFile(join(paths.stateDir, DAEMON_PID_FILE), 'utf8'), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Stops the daemon (SIGTERM: it closes its sessions, which stops their jobs) and waits until it has
 * gone. Returns false when no daemon was running.
 */
export async function stopAgent(paths: StatePaths): Promise<boolean> {
  const pid = await daemonPid(paths);
  const live = await socketIsLive(paths.socketPath);
  if (pid === undefined || !alive(pid)) {
    if (live) {
      throw new CliError(
        ExitCode.Internal,
        CliErrorCode.AgentUnknownPid,
        `an agent answers on ${paths.socketPath} but its pid file is missing`,
      );
    }
    return false;
  }
  process.kill(pid, 'SIGTERM');
  // Generous: jobs get their stop grace and the agent flushes its spools before it exits.
  const deadline = Date.now() + STOP_TIMEOUT_MS;
  while (alive(pid) && Date.now() < deadline)
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
  if (alive(pid)) {
    // A hung agent: end its whole process group (it leads one), jobs included.
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      process.kill(pid, 'SIGKILL');
    }
  }
  return true;
}

/** No local job is waiting, running, stopping, paused or Disconnected: a restart loses nothing. */
export async function idleAgent(host: import('@rjob/core').Session<unknown>): Promise<boolean> {
  const jobs = await host.jobs.get();
  return jobs.every((job) => job.state === 'Completed' || job.state === 'Failed' || job.state === 'Stopped');
}

/** Stops an idle agent of another rjob version and starts this one's, saying so in one line. */
export async function restartOutdatedAgent(
  paths: StatePaths,
  io: CliIo,
  was: string | undefined,
): Promise<void> {
  await stopAgent(paths);
  await ensureAgent(paths, io);
  const { agentSoftware } = await import('./version.js');
  io.stderr.write(
    `rjob: restarted the local agent (it ran ${was ?? 'an older rjob'}, this is ${await agentSoftware()}; no job was running)\n`,
  );
}
