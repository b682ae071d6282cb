/**
 * How an agent process serves its state directory, whatever its doors: the directory's lock, the
 * pid file, the doors opened in order, the restore, then serving until SIGTERM or SIGINT and a
 * clean shutdown. The daemon (`rjob agent daemon`) and `rjob agent --listen` both run it.
 */
import { readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ProtocolErrorCode } from '@rjob/core/errors';
import type { AgentServer } from '../server/agent-server.js';
import { DAEMON_PID_FILE } from '../state-dir.js';

/** A door the agent serves through (the Unix socket, a WebSocket listener). */
export interface OpenDoor {
  close(): Promise<void>;
}

export interface ServeAgentOptions {
  stateDir: string;
  /** One line of the agent's log, without its prefix. */
  log(line: string): void;
  /** Opens the doors, in order, once the lock is held and the pid file written. */
  doors: Array<() => Promise<OpenDoor>>;
  /** Once the doors are open and the jobs restored: say where the agent listens. */
  listening(): Promise<void> | void;
  /** After the doors closed, before the lock goes (a link the daemon made to its socket). */
  closing?(): Promise<void>;
}

/** Serves until SIGTERM or SIGINT. Throws (having closed what it opened) when a door cannot open. */
export async function serveAgent(server: AgentServer, options: ServeAgentOptions): Promise<void> {
  const { log } = options;
  const doors: OpenDoor[] = [];
  // Nothing to remove until it is written.
  let pidFile: { remove(): Promise<void> } = { remove: async () => {} };
  try {
    // The state directory's lock first (ERR_AGENT_RUNNING when another agent holds it): a second
    // agent must not load (and rewrite) the first one's store, nor listen for anything.
    await server.ready();
    // The pid file before any door: a client that reached the agent (`rjob agent start`
    // returning, then `rjob agent stop`) always finds the pid of the agent it reached.
    pidFile = await writePidFile(options.stateDir, (error) => log(describe('cannot write agent.pid', error)));
    for (const open of options.doors) doors.push(await open());
  } catch (error) {
    await Promise.all(doors.map((door) => door.close()));
    await pidFile.remove();
    await server.close();
    throw error;
  }
  try {
    // Links that arrive meanwhile wait for it inside the server.
    const restored = await server.restore();
    if (restored.sessions > 0) {
      log(
        `restored ${restored.sessions} sessions, ${restored.jobs} jobs (${restored.failedOnRestart} failed: agent restarted)`,
      );
    }
  } catch (error) {
    log(describe('restore failed', error));
  }
  await options.listening();
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  log('shutting down');
  await Promise.all(doors.map((door) => door.close()));
  // Before the lock goes with the server: a next agent's pid file is never the one removed.
  await pidFile.remove();
  await server.close();
  await options.closing?.();
}

/** A door's `onLinkError`: logs refused links, except a peer that hung up during the handshake. */
export function linkErrorLogger(log: (line: string) => void): (error: unknown) => void {
  return (error) => {
    // A liveness probe or a dead client is not news.
    if ((error as { code?: unknown })?.code !== ProtocolErrorCode.LinkClosed)
      log(describe('link refused', error));
  };
}

/** `what: CODE: message`, as the agent's log lines name an error. */
export function describe(what: string, error: unknown): string {
  const code = (error as { code?: unknown })?.code;
  const message = error instanceof Error ? error.message : String(error);
  return `${what}: ${typeof code === 'string' ? `${code}: ` : ''}${message}`;
}

/**
 * Writes this process's pid to the state directory's `agent.pid` (for `rjob agent stop` and
 * scripts) once it holds the directory's lock. On a full disk the agent still serves (and
 * `onError` says so) rather than not starting at all. `remove()` deletes the file if it still
 * holds this pid; call it before releasing the lock.
 */
export async function writePidFile(
  stateDir: string,
  onError: (error: unknown) => void = () => {},
): Promise<{ remove(): Promise<void> }> {
  const file = join(stateDir, DAEMON_PID_FILE);
  const mine = `${process.pid}\n`;
  await writeFile(file, mine, { mode: 0o600 }).catch(onError);
  return {
    async remove() {
      if ((await readFile(file, 'utf8').catch(() => undefined)) === mine) await unlink(file).catch(() => {});
    },
  };
}
