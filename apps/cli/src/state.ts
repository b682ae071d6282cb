/**
 * Where the CLI keeps its handles: the agent's state directory, plus `cli/sessions.json` (0600)
 * with the id and resume secret of every session the CLI opened, so a later invocation can take
 * the session over with connectSession.
 */
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
// The agent's light entry: `rjob agent --stdio` loads this file and must stay quick to start.
import { defaultSocketPath, ensureStateDir, resolveStateDir } from '@rjob/agent/cli';
import type { CliIo } from './io.js';

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
  /** The session in the local agent that holds `rjob start`'s jobs. */
  local?: StoredCredentials;
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

  async #read(): Promise<StoreFile> {
    try {
      const parsed = JSON.parse(await readFile(this.#file, 'utf8')) as Partial<StoreFile>;
      return { ...parsed, sessions: Array.isArray(parsed.sessions) ? parsed.sessions : [] };
    } catch {
      return { sessions: [] };
    }
  }

  async #write(data: StoreFile): Promise<void> {
    await ensureStateDir(this.#stateDir);
    const dir = join(this.#stateDir, 'cli');
    await mkdir(dir, { recursive: true, mode: 0o700 });
    // Write then rename, so a crash never leaves half a file and loses every handle.
    const tmp = `${this.#file}.${process.pid}.tmp`;
    await writeFile(tmp, `${JSON.stringify(data, null, 2)}\n`, { mode: 0o600 });
    await chmod(tmp, 0o600);
    await rename(tmp, this.#file);
  }

  async local(): Promise<StoredCredentials | undefined> {
    return (await this.#read()).local;
  }

  async setLocal(credentials: StoredCredentials): Promise<void> {
    const data = await this.#read();
    data.local = { sessionId: credentials.sessionId, resumeSecret: credentials.resumeSecret };
    await this.#write(data);
  }

  async list(): Promise<StoredSession[]> {
    return (await this.#read()).sessions;
  }

  async find(name: string): Promise<StoredSession | undefined> {
    return (await this.#read()).sessions.find((s) => s.name === name);
  }

  async put(session: StoredSession): Promise<void> {
    const data = await this.#read();
    data.sessions = [...data.sessions.filter((s) => s.name !== session.name), session];
    await this.#write(data);
  }

  async delete(name: string): Promise<void> {
    const data = await this.#read();
    data.sessions = data.sessions.filter((s) => s.name !== name);
    await this.#write(data);
  }
}
