/**
 * The agent's persistent job tables: one directory per session, one file per job, each replaced
 * atomically, so a restarted agent finds every session and every job it held.
 *
 *   <dir>/sessions/<sessionId>/session.bin
 *   <dir>/sessions/<sessionId>/jobs/<instanceId>/job.bin
 *   <dir>/sessions/<sessionId>/jobs/<instanceId>/spool/      (the job's RecordSpool)
 *
 * A `.bin` file is `RJS1` + crc32 + an `encodeValue` payload, so Dates, Maps, BigInts and the like
 * in `data` come back as they went in, and a damaged file is reported instead of misread.
 *
 * Damage loses only the damaged item: a damaged `job.bin` drops that job (reported); a damaged
 * `session.bin` does not hide the session's jobs. Its lasting part (identity, resume secret digest,
 * name, working directory, environment, creation time) is also kept in `session.key`, written
 * only when that part changes, so the session comes back from it with its jobs; `lastSeenAt`
 * restarts from now.
 */
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { crc32 } from 'node:zlib';
import {
  ErrorCode,
  isTerminal,
  type JobColumns,
  type JobState,
  RjobError,
  type SerializedError,
  serializeError,
} from '@rjob/core';
import { decodeValue, encodeValue } from '@rjob/core/codec';
import { AgentErrorCode, agentRestartedError, diskFullError, isSpaceError } from '../errors.js';
import { TEMP_MARKER, writeFileAtomic } from '../fs/atomic-file.js';
import { reportIncident } from '../incidents.js';

/** A job as persisted: what `Get-Job` shows, plus where its records are spooled. */
export interface StoredJob extends JobColumns {
  sessionId: string;
  state: JobState;
  /** Why a Failed job failed. */
  reason?: SerializedError;
  beginTime?: Date;
  endTime?: Date;
  parentId?: number;
  childIds: number[];
  /**
   * The job's spool directory (absolute; stored relative to the job's directory). Absent for a
   * parent job, whose records live in its children's spools.
   */
  spoolDir?: string;
  /** Anything else the session server keeps with the job (its definition, ...). */
  data?: unknown;
}

/** A session as persisted. The resume secret itself is never stored, only its digest. */
export interface StoredSession {
  sessionId: string;
  /** Who opened it; only that identity may resume it. */
  identity: string;
  /** Digest of the resume secret (e.g. SHA-256, as the server's `hashResumeSecret` makes). */
  resumeSecretHash: Uint8Array;
  workingDirectory: string;
  env: Record<string, string>;
  createdAt: Date;
  /** Last time a client was attached; idle disconnected sessions expire from here. */
  lastSeenAt: Date;
  name?: string;
  /** Idle expiry in ms as last configured (absent: the agent's default). */
  idleTimeoutMs?: number;
  /** The identity's job host (the user's local jobs): never expires, never resumed directly. */
  host?: boolean;
  data?: unknown;
}

/** What {@link JobStore.load} found. */
export interface StoreSnapshot {
  sessions: StoredSession[];
  /** Every job, by session then id. Unfinished ones were turned Failed ("agent restarted"). */
  jobs: StoredJob[];
  /** Jobs that were unfinished when the agent died, now Failed (also in `jobs`). */
  failedOnRestart: StoredJob[];
  /** Files that could not be read; they are left in place for a human to look at. */
  skipped: Array<{ path: string; error: RjobError }>;
  /** Sessions whose `session.bin` was damaged and that came back from their `session.key`. */
  recoveredSessions: string[];
}

export interface JobStoreOptions {
  /** Root directory (e.g. the agent's state directory). Created 0700 if missing. */
  dir: string;
  /**
   * fsync each file before renaming it into place, so a power loss leaves the old or the new
   * version rather than an empty file. A SIGKILL is safe either way. Default true: job and
   * session files change only on state changes, so the cost is small.
   */
  fsync?: boolean;
}

const MAGIC = Buffer.from('RJS1');
const FORMAT_VERSION = 1;
const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const SESSION_FILE = 'session.bin';
const SESSION_KEY_FILE = 'session.key';
const JOB_FILE = 'job.bin';

/** The part of a session that does not change with each attach: what `session.key` keeps. */
type SessionKey = Omit<StoredSession, 'lastSeenAt' | 'data'>;

/**
 * Persists sessions and their job tables. Writes to one file are applied in call order; writes to
 * different files run concurrently.
 */
export class JobStore {
  readonly dir: string;
  readonly #fsync: boolean;
  readonly #queues = new Map<string, Promise<void>>();
  /** Per session directory, the `session.key` content last written (see the file comment). */
  readonly #keys = new Map<string, Buffer>();

  private constructor(options: JobStoreOptions) {
    this.dir = options.dir;
    this.#fsync = options.fsync ?? true;
  }

  static async open(options: JobStoreOptions): Promise<JobStore> {
    await mkdir(join(options.dir, 'sessions'), { recursive: true, mode: 0o700 });
    return new JobStore(options);
  }

  sessionDir(sessionId: string): string {
    return join(this.dir, 'sessions', safeName(sessionId, 'session id'));
  }

  jobDir(sessionId: string, instanceId: string): string {
    return join(this.sessionDir(sessionId), 'jobs', safeName(instanceId, 'job instance id'));
  }

  /** Where a job's RecordSpool lives by default. */
  spoolDir(sessionId: string, instanceId: string): string {
    return join(this.jobDir(sessionId, instanceId), 'spool');
  }

  /** Writes (or replaces) a session's metadata. */
  saveSession(session: StoredSession): Promise<void> {
    if ('resumeSecret' in session) {
      return Promise.reject(
        new RjobError(
          ErrorCode.InvalidArgument,
          'A session is stored with its resume secret hash, never the secret.',
        ),
      );
    }
    const dir = this.sessionDir(session.sessionId);
    return this.#serial(dir, async () => {
      await mkdir(join(dir, 'jobs'), { recursive: true, mode: 0o700 });
      const key: SessionKey = {
        sessionId: session.sessionId,
        identity: session.identity,
        resumeSecretHash: session.resumeSecretHash,
        workingDirectory: session.workingDirectory,
        env: session.env,
        createdAt: session.createdAt,
      };
      if (session.name !== undefined) key.name = session.name;
      const keyBytes = encodeFile(key);
      if (!this.#keys.get(dir)?.equals(keyBytes)) {
        await this.#writeBytes(join(dir, SESSION_KEY_FILE), keyBytes, `session ${session.sessionId}`);
        this.#keys.set(dir, keyBytes);
      }
      await this.#write(join(dir, SESSION_FILE), session);
    });
  }

  /** Deletes a session with all its jobs and their spools. */
  removeSession(sessionId: string): Promise<void> {
    const dir = this.sessionDir(sessionId);
    this.#keys.delete(dir);
    return this.#serial(dir, () => rm(dir, { recursive: true, force: true }));
  }

  /**
   * Writes (or replaces) one job's entry. `fsync: false` skips the fsync of this write even when
   * the store syncs (for entries whose loss in a power cut costs nothing; see spoolJob).
   */
  saveJob(job: StoredJob, options: { fsync?: boolean } = {}): Promise<void> {
    const dir = this.jobDir(job.sessionId, job.instanceId);
    const stored: StoredJob = { ...job };
    if (job.spoolDir !== undefined) stored.spoolDir = relative(dir, job.spoolDir) || '.';
    const fsync = this.#fsync && options.fsync !== false;
    return this.#serial(dir, async () => {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await this.#write(join(dir, JOB_FILE), stored, fsync);
    });
  }

  /** Deletes a job's entry and its files, spool included. Close its spool first. */
  removeJob(sessionId: string, instanceId: string, spoolDir?: string): Promise<void> {
    const dir = this.jobDir(sessionId, instanceId);
    return this.#serial(dir, async () => {
      await rm(dir, { recursive: true, force: true });
      if (spoolDir !== undefined) await rm(spoolDir, { recursive: true, force: true });
    });
  }

  /**
   * Reads every session and job. A job that was NotStarted, Running, Stopping or Disconnected is
   * what a dead agent leaves behind: it is rewritten as Failed with ERR_AGENT_RESTARTED
   * ("agent restarted"), never offered as a phantom Running job. Finished jobs keep their spools,
   * so their unreceived records are still there. Call once, when the agent starts.
   */
  async load(): Promise<StoreSnapshot> {
    const snapshot: StoreSnapshot = {
      sessions: [],
      jobs: [],
      failedOnRestart: [],
      skipped: [],
      recoveredSessions: [],
    };
    const now = new Date();
    for (const sessionId of (await listDir(join(this.dir, 'sessions'))).sort()) {
      if (!SAFE_NAME.test(sessionId)) continue;
      const sessionDir = this.sessionDir(sessionId);
      await removeTempFiles(sessionDir);
      let session = await this.#readOrSkip<StoredSession>(
        join(sessionDir, SESSION_FILE),
        snapshot,
        'session file',
      );
      const keyPath = join(sessionDir, SESSION_KEY_FILE);
      if (session) {
        // Known to be current: the next save need not rewrite it.
        const key = await readFile(keyPath).catch(() => undefined);
        if (key) this.#keys.set(sessionDir, key);
      } else {
        // Damaged or missing: the session's jobs must not vanish with it.
        const damaged = snapshot.skipped.at(-1)?.path === join(sessionDir, SESSION_FILE);
        const key = await this.#readOrSkip<SessionKey>(keyPath, snapshot, 'session key file');
        const subject = `session file ${join(sessionDir, SESSION_FILE)}`;
        if (key && key.sessionId === sessionId) {
          session = { ...key, lastSeenAt: now };
          snapshot.recoveredSessions.push(sessionId);
          reportIncident({
            kind: 'damaged',
            code: AgentErrorCode.StateDamaged,
            subject,
            detail: `${damaged ? 'unreadable' : 'missing'}: session ${sessionId} restored from ${SESSION_KEY_FILE} with all its jobs (its last-seen time restarts now)`,
          });
          await this.saveSession(session).catch(() => {});
        } else if (damaged) {
          const jobCount = (await listDir(join(sessionDir, 'jobs'))).length;
          reportIncident({
            kind: 'damaged',
            code: AgentErrorCode.StateDamaged,
            subject,
            detail: `unreadable, and ${SESSION_KEY_FILE} is missing or damaged: session ${sessionId} cannot be resumed; its ${jobCount} job(s) are kept on disk in ${join(sessionDir, 'jobs')}`,
          });
        }
      }
      if (session) snapshot.sessions.push(session);
      const jobs: StoredJob[] = [];
      for (const instanceId of await listDir(join(sessionDir, 'jobs'))) {
        if (!SAFE_NAME.test(instanceId)) continue;
        const dir = this.jobDir(sessionId, instanceId);
        await removeTempFiles(dir);
        const job = await this.#readOrSkip<StoredJob>(join(dir, JOB_FILE), snapshot, 'job file');
        if (!job) continue;
        if (job.spoolDir !== undefined) job.spoolDir = resolve(dir, job.spoolDir);
        if (!isTerminal(job.state)) {
          job.state = 'Failed';
          job.reason = serializeError(agentRestartedError());
          job.endTime ??= now;
          await this.saveJob(job);
          snapshot.failedOnRestart.push(job);
        }
        jobs.push(job);
      }
      snapshot.jobs.push(...jobs.sort((a, b) => a.id - b.id));
    }
    return snapshot;
  }

  /** Resolves once every write started so far has finished. */
  async idle(): Promise<void> {
    await Promise.all([...this.#queues.values()]);
  }

  async #write(path: string, value: StoredJob | StoredSession, fsync = this.#fsync): Promise<void> {
    const what = 'instanceId' in value ? `job ${value.instanceId}` : `session ${value.sessionId}`;
    await this.#writeBytes(path, encodeFile(value), what, fsync);
  }

  async #writeBytes(path: string, bytes: Buffer, what: string, fsync = this.#fsync): Promise<void> {
    try {
      await writeFileAtomic(path, bytes, { fsync });
    } catch (error) {
      if (isSpaceError(error)) throw diskFullError(`the state of ${what}`, error);
      throw error;
    }
  }

  /**
   * The value in `path`; undefined when missing; a damaged file is listed in `skipped` and
   * reported as an incident (`what` names it: `job file`).
   */
  async #readOrSkip<T>(path: string, snapshot: StoreSnapshot, what: string): Promise<T | undefined> {
    let bytes: Buffer;
    try {
      bytes = await readFile(path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
    try {
      const payload = bytes.subarray(8);
      if (!bytes.subarray(0, 4).equals(MAGIC) || bytes.readUInt32LE(4) !== crc32(payload)) {
        throw new Error('bad header or checksum');
      }
      const decoded = decodeValue<{ version: number; value: T }>(payload);
      if (decoded.version !== FORMAT_VERSION) throw new Error(`unknown format version ${decoded.version}`);
      return decoded.value;
    } catch (error) {
      snapshot.skipped.push({
        path,
        error: new RjobError(
          AgentErrorCode.StoreCorrupt,
          `Cannot read ${path}: ${(error as Error).message}`,
          {
            cause: error,
            details: { path },
          },
        ),
      });
      // A damaged session file is reported by load (restored from its key, or not).
      if (what !== 'session file') {
        reportIncident({
          kind: 'damaged',
          code: AgentErrorCode.StateDamaged,
          subject: `${what} ${path}`,
          detail: `${bytes.length === 0 ? 'empty' : (error as Error).message}: dropped (left in place), everything else kept`,
        });
      }
      return undefined;
    }
  }

  /** Runs `task` after every earlier task on the same key, so the last write wins on disk too. */
  #serial(key: string, task: () => Promise<void>): Promise<void> {
    const previous = this.#queues.get(key) ?? Promise.resolve();
    const next = previous.catch(() => {}).then(task);
    const settled = next.catch(() => {});
    this.#queues.set(key, settled);
    void settled.then(() => {
      if (this.#queues.get(key) === settled) this.#queues.delete(key);
    });
    return next;
  }
}

/** Session ids and instance ids become directory names: nothing that could climb out. */
function safeName(value: string, what: string): string {
  if (!SAFE_NAME.test(value)) {
    throw new RjobError(
      ErrorCode.InvalidArgument,
      `Invalid ${what} "${value}": use letters, digits, '.', '_' and '-'.`,
      {
        details: { value },
      },
    );
  }
  return value;
}

/** `RJS1` + crc32 + the payload: what every `.bin` (and `.key`) file holds. */
function encodeFile(value: unknown): Buffer {
  const payload = encodeValue({ version: FORMAT_VERSION, value });
  const header = Buffer.alloc(8);
  MAGIC.copy(header, 0);
  header.writeUInt32LE(crc32(payload), 4);
  return Buffer.concat([header, payload]);
}

async function listDir(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
}

async function removeTempFiles(dir: string): Promise<void> {
  for (const name of await listDir(dir)) {
    if (name.includes(TEMP_MARKER)) await rm(join(dir, name), { force: true });
  }
}
