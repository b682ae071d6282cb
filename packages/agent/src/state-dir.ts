import { fsp } from './fs/lazy-fs.js';
import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';

// Only Node's own modules here: the `--stdio` bridge (cli-main.ts) loads this and little else.

/**
 * The state directory's lock (state-lock.ts), held by the agent that serves it: its first line is
 * that agent's pid. (`agent.pid` holds the pid alone, for `rjob agent stop` and scripts.)
 */
export const STATE_LOCK_FILE = 'agent.lock';

/** The state directory's file with the serving agent's pid (`rjob agent stop`, scripts). */
export const DAEMON_PID_FILE = 'agent.pid';

/**
 * Where the agent keeps its state (sessions, job tables, spools): `$RJOB_STATE_DIR`, else
 * `$XDG_STATE_HOME/rjob`, else `~/.local/state/rjob`. The home directory comes from
 * `os.homedir()`, which honours `$HOME`, so tests can sandbox it. A relative `XDG_STATE_HOME` is
 * ignored, as the XDG spec asks.
 */
export function resolveStateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.RJOB_STATE_DIR) return env.RJOB_STATE_DIR;
  const xdg = env.XDG_STATE_HOME;
  if (xdg && isAbsolute(xdg)) return join(xdg, 'rjob');
  return join(homedir(), '.local', 'state', 'rjob');
}

/**
 * Creates the state directory (and its parents) with mode 0700 and returns its path. An existing
 * directory with looser permissions is tightened; one owned by another user is refused
 * (ERR_STATE_DIR_INSECURE), since spools hold other people's job output.
 */
export async function ensureStateDir(dir: string = resolveStateDir()): Promise<string> {
  await fsp().mkdir(dir, { recursive: true, mode: 0o700 });
  const info = await fsp().stat(dir);
  if (!info.isDirectory()) {
    throw await insecure(`The state directory ${dir} is not a directory.`, { dir });
  }
  if (typeof process.getuid === 'function' && info.uid !== process.getuid()) {
    throw await insecure(`The state directory ${dir} belongs to another user (uid ${info.uid}).`, {
      dir,
      uid: info.uid,
    });
  }
  // mkdir's mode is filtered by the umask and does not apply to a directory that already existed.
  if ((info.mode & 0o777) !== 0o700) await fsp().chmod(dir, 0o700);
  return dir;
}

/**
 * `$XDG_RUNTIME_DIR/rjob/agent.sock` when the session has a runtime directory (tmpfs, private to
 * the user, cleaned at logout), else `<stateDir>/agent.sock`.
 */
export function defaultSocketPath(stateDir: string, env: NodeJS.ProcessEnv = process.env): string {
  const runtime = env.XDG_RUNTIME_DIR;
  return runtime ? join(runtime, 'rjob', 'agent.sock') : join(stateDir, 'agent.sock');
}

/** ERR_STATE_DIR_INSECURE; the error classes are loaded only when it happens. */
async function insecure(message: string, details: Record<string, unknown>): Promise<Error> {
  const [{ RjobError }, { AgentErrorCode }] = await Promise.all([
    import('@rjob/core'),
    import('./errors.js'),
  ]);
  return new RjobError(AgentErrorCode.StateDirInsecure, message, { details });
}
