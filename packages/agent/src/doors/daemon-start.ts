/**
 * Starting the agent daemon and waiting for it: the one way, used by the `--stdio` bridge and by the
 * `rjob` CLI. Node built-ins only (the light `@rjob/agent/cli` entry loads it).
 */
import { closeSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { socketIsLive } from './socket-probe.js';

/** Log file of a started daemon, inside the state directory. */
export const DAEMON_LOG_FILE = 'agent.log';

const POLL_INTERVAL_MS = 50;

export interface SpawnDaemonOptions {
  /** Arguments after `process.execPath` that run the daemon (`… daemon --state-dir D --socket S`). */
  args: string[];
  /** Its state directory: `agent.log` there gets its output. */
  stateDir: string;
  /** Default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Default: this process's working directory. */
  cwd?: string;
}

/**
 * Starts the daemon detached, in its own process group (so a terminal's Ctrl-C or an SSH session's
 * hangup does not reach it), with output appended to the state directory's log. Racing starts are
 * harmless: one daemon takes the state directory's lock, the others exit.
 */
export function spawnDaemon(options: SpawnDaemonOptions): void {
  const log = openSync(join(options.stateDir, DAEMON_LOG_FILE), 'a', 0o600);
  try {
    // Fetched here, not imported: only a daemon start needs child_process (a quicker start).
    const { spawn } = process.getBuiltinModule('node:child_process');
    const child = spawn(process.execPath, options.args, {
      detached: true,
      stdio: ['ignore', log, log],
      env: options.env ?? process.env,
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    });
    child.unref();
  } finally {
    closeSync(log);
  }
}

/** Resolves true once something answers on `socketPath`, false when `timeoutMs` passed first. */
export async function waitForSocket(socketPath: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await socketIsLive(socketPath)) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
  }
}
