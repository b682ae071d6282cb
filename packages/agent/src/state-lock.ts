/**
 * One agent per state directory. Every agent that keeps state (the daemon, `rjob agent --listen`)
 * holds `<stateDir>/agent.lock` while it runs: a file made atomically (written aside, then hard
 * linked into place, so it is never seen half written) that holds the holder's pid, what tells that
 * process apart from a later one given the same pid, and a nonce. A second agent finds it, sees the
 * holder alive and is refused (ERR_AGENT_RUNNING). A file whose holder is dead (SIGKILL, a crash, a
 * reboot) is stale: it is removed, under a breaker file of its own, and the start goes on. See
 * docs/decisions.md ("One agent per state directory").
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { link, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { RjobError } from '@rjob/core';
import { AgentErrorCode } from './errors.js';
import { STATE_LOCK_FILE } from './state-dir.js';

/** How long a start waits for another process that is removing the same stale lock. */
const BREAK_WAIT_MS = 2_000;
const RETRY_MS = 20;

export interface StateDirLock {
  /** The lock file. */
  readonly file: string;
  /** Removes the lock file, if it is still this holder's. */
  release(): Promise<void>;
}

interface Holder {
  pid: number;
  /** Boot id and start time of the process (Linux), empty where the system does not tell. */
  start: string;
}

/**
 * Takes the state directory's lock for this process, or rejects with ERR_AGENT_RUNNING (naming the
 * live holder's pid) when another agent holds it.
 */
export async function lockStateDir(stateDir: string): Promise<StateDirLock> {
  const file = join(stateDir, STATE_LOCK_FILE);
  const content = `${process.pid}\n${processStart(process.pid)}\n${randomBytes(8).toString('hex')}\n`;
  const mine: StateDirLock = {
    file,
    async release() {
      if ((await readFile(file, 'utf8').catch(() => undefined)) === content)
        await unlink(file).catch(() => {});
    },
  };
  const deadline = Date.now() + BREAK_WAIT_MS;
  for (;;) {
    if (await create(file, content)) return mine;
    const held = await readFile(file, 'utf8').catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined;
      throw error;
    });
    if (held === undefined) continue; // Released between our attempt and the read: try again.
    const holder = parseHolder(held);
    if (holder && isAlive(holder)) {
      throw new RjobError(
        AgentErrorCode.AgentRunning,
        `An agent (pid ${holder.pid}) already serves the state directory ${stateDir}. Use it (rjob agent status), stop it (rjob agent stop) before starting another, or give this one its own --state-dir.`,
        { details: { pid: holder.pid, stateDir, lockFile: file } },
      );
    }
    if (!(await breakStale(file, held))) {
      if (Date.now() > deadline) {
        throw new RjobError(
          AgentErrorCode.StateLockStuck,
          `The lock ${file} is stale but another start stopped while removing it; remove ${file} and ${breakerFile(file, held)} and start again.`,
          { details: { stateDir, lockFile: file, breakerFile: breakerFile(file, held) } },
        );
      }
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
    }
  }
}

/** Puts `content` at `file` unless the file exists; never leaves it half written. */
async function create(file: string, content: string): Promise<boolean> {
  const aside = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(aside, content, { mode: 0o600 });
  try {
    await link(aside, file);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  } finally {
    await unlink(aside).catch(() => {});
  }
}

/**
 * Removes the stale lock whose content is `held`, unless another process is doing so. The breaker
 * file is named after that content, so only one process may remove one stale lock; it checks the
 * lock still holds `held` first (a new lock has a new nonce), so a late remover cannot take away a
 * lock made since. False when another process holds the breaker.
 */
async function breakStale(file: string, held: string): Promise<boolean> {
  const breaker = breakerFile(file, held);
  try {
    await writeFile(breaker, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  }
  try {
    if ((await readFile(file, 'utf8').catch(() => undefined)) === held) await unlink(file).catch(() => {});
  } finally {
    await unlink(breaker).catch(() => {});
  }
  return true;
}

function breakerFile(file: string, held: string): string {
  return `${file}.${createHash('sha256').update(held).digest('hex').slice(0, 16)}.break`;
}

function parseHolder(text: string): Holder | undefined {
  const [pidLine, start = ''] = text.split('\n');
  const pid = Number(pidLine);
  return Number.isInteger(pid) && pid > 0 ? { pid, start } : undefined;
}

/** Whether the process that wrote the lock still runs (not merely a later one with its pid). */
function isAlive(holder: Holder): boolean {
  try {
    process.kill(holder.pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  return holder.start === '' || holder.start === processStart(holder.pid);
}

/**
 * `<boot id>:<start time in clock ticks>` of a process on Linux (from /proc), '' elsewhere: with the
 * pid, it names one process, so a lock left before a reboot or by a process whose pid was reused is
 * seen as stale.
 */
function processStart(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may hold spaces: starttime is the 22nd.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    return `${bootId}:${fields[19]}`;
  } catch {
    return '';
  }
}
