/**
 * Where the CLI keeps its handles: the agent's state directory, plus `cli/sessions.json` (0600)
 * with the id and resume secret of every session the CLI opened, so a later invocation can take
 * the session over with connectSession.
 */
import { fsp } from './lazy-fs.js';
import { join } from 'node:path';
// The agent's light entry: `rjob agent --stdio` loads this file and must stay quick to start.
import { defaultSocketPath, ensureStateDir, resolveStateDir } from '@rjob/agent/cli';
import { CliError, type CliIo, ExitCode } from './io.js';
import { CliErrorCode } from './error-codes.js';
import { AgentErrorCode } from '@rjob/agent/cli';

/** A lock older than this was left by a command that died holding it. */
const STALE_LOCK_MS = 10_000;
const LOCK_WAIT_MS = 15_000;

export interface StoredCredentials {
  sessionId: string;
  resumeSecret: string;
}

/** A named session opened by `rjob session new`. */
export interface StoredSession extends StoredCredentials {
  name: string;
  /** What was typed: `localhost`, an ssh target or alias, a ws:// or wss:// URL. */
  target: string;
  createdAtMs: number;
}

interface StoreFile {
  sessions: StoredSession[];
}

export interface StatePaths {
  stateDir: string;
  socketPath: string;
  /** True when the user chose the state directory (flag or env): the socket then lives inside it. */
  explicit: boolean;
}

/**
 * `--state-dir`, else `$RJOB_STATE_DIR`, else the agent's default. An explicit state directory also
 * holds the socket (not `$XDG_RUNTIME_DIR`), so a sandboxed run can never reach the user's real agent.
 */
export function statePaths(io: CliIo, stateDirFlag?: string): StatePaths {
  const explicitDir = stateDirFlag ?? io.env.RJOB_STATE_DIR;
  const stateDir = explicitDir ?? resolveStateDir(io.env);
  const socketPath =
    io.env.RJOB_SOCKET ?? (explicitDir ? join(stateDir, 'agent.sock') : defaultSocketPath(stateDir, io.env));
  return { stateDir, socketPath, explicit: explicitDir !== undefined };
}

export class SessionStore {
  readonly #file: string;
  readonly #stateDir: string;

  constructor(stateDir: string) {
    this.#stateDir = stateDir;
    this.#file = join(stateDir, 'cli', 'sessions.json');
  }

  /**
   * The file as stored; none yet is an empty store. A file that is not what this CLI writes is an
   * error (ERR_STATE_DAMAGED), never read as empty: the next write would forget every session.
   */
  async #read(): Promise<StoreFile> {
    let text: string;
    try {
      text = await fsp().readFile(this.#file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { sessions: [] };
      throw error;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    const sessions = (parsed as Partial<StoreFile> | undefined)?.sessions;
    if (!Array.isArray(sessions) || !sessions.every(isStoredSession)) {
      throw new CliError(
        ExitCode.Internal,
        AgentErrorCode.StateDamaged,
        `${this.#file} is damaged and cannot be read; move it away to start afresh (the sessions it named stay on their agents)`,
      );
    }
    return { sessions };
  }

  /**
   * Read-modify-write under the store's lock, so commands running at once never undo each other's
   * changes. `change` returns what the caller gets back; the file is written only if it changed.
   */
  async update<T>(change: (data: StoreFile) => T): Promise<T> {
    const release = await this.#lock();
    try {
      const data = await this.#read();
      const before = JSON.stringify(data);
      const result = change(data);
      if (JSON.stringify(data) !== before) await this.#write(data);
      return result;
    } finally {
      await release();
    }
  }

  async #lock(): Promise<() => Promise<void>> {
    await ensureStateDir(this.#stateDir);
    await fsp().mkdir(join(this.#stateDir, 'cli'), { recursive: true, mode: 0o700 });
    const path = `${this.#file}.lock`;
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (let delayMs = 5; ; delayMs = Math.min(delayMs * 2, 100)) {
      try {
        const handle = await fsp().open(path, 'wx', 0o600);
        await handle.writeFile(String(process.pid));
        await handle.close();
        return () =>
          fsp()
            .unlink(path)
            .catch(() => {});
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
      const held = await fsp()
        .stat(path)
        .catch(() => undefined);
      if (held && Date.now() - held.mtimeMs > STALE_LOCK_MS) {
        await fsp()
          .unlink(path)
          .catch(() => {});
        continue;
      }
      if (Date.now() > deadline) {
        throw new CliError(
          ExitCode.Internal,
          CliErrorCode.StateLocked,
          `${path} is held by another rjob command`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }

  async #write(data: StoreFile): Promise<void> {
    await ensureStateDir(this.#stateDir);
    const dir = join(this.#stateDir, 'cli');
    await fsp().mkdir(dir, { recursive: true, mode: 0o700 });
    // Write then rename, so a crash never leaves half a file and loses every handle.
    const tmp = `${this.#file}.${process.pid}.tmp`;
    await fsp().writeFile(tmp, `${JSON.stringify(data, null, 2)}\n`, { mode: 0o600 });
    await fsp().chmod(tmp, 0o600);
    await fsp().rename(tmp, this.#file);
  }

  async list(): Promise<StoredSession[]> {
    return (await this.#read()).sessions;
  }

  async find(name: string): Promise<StoredSession | undefined> {
    return (await this.#read()).sessions.find((s) => s.name === name);
  }

  async put(session: StoredSession): Promise<void> {
    await this.update((data) => {
      data.sessions = [...data.sessions.filter((s) => s.name !== session.name), session];
    });
  }

  /**
   * Adds a new session under its own name, or the first free `SessionN` when `name` is undefined;
   * undefined when `name` is taken. Under the lock, so two commands never pick the same name.
   */
  async add(session: Omit<StoredSession, 'name'>, name: string | undefined): Promise<string | undefined> {
    return this.update((data) => {
      if (name !== undefined && data.sessions.some((s) => s.name === name)) return undefined;
      let chosen = name;
      if (chosen === undefined) {
        let n = data.sessions.length + 1;
        while (data.sessions.some((s) => s.name === `Session${n}`)) n++;
        chosen = `Session${n}`;
      }
      data.sessions.push({ ...session, name: chosen });
      return chosen;
    });
  }

  async delete(name: string): Promise<void> {
    await this.update((data) => {
      data.sessions = data.sessions.filter((s) => s.name !== name);
    });
  }
}

function isStoredSession(value: unknown): value is StoredSession {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return (
    typeof v.name === 'string' &&
    typeof v.target === 'string' &&
    typeof v.sessionId === 'string' &&
    typeof v.resumeSecret === 'string'
  );
}
