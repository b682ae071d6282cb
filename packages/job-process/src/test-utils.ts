import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** True while `pid` names a live process; a zombie (exited, not yet reaped) counts as gone. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Live members of a process group. */
export function groupMembers(pgid: number): number[] {
  try {
    const out = execFileSync('pgrep', ['-g', String(pgid)], { encoding: 'utf8' });
    return out.split('\n').filter(Boolean).map(Number).filter(isAlive);
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
}

/** Polls `check` until it holds, failing after `deadlineMs` (a safety net, not a timing claim). */
export async function eventually(check: () => boolean, what: string, deadlineMs = 15_000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`Gave up waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** Best-effort SIGKILL of pids a test started, for cleanup after a failed assertion. */
export function killAll(pids: Iterable<number>): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** Live watchdogs started by this process (the process job type's orphan guard). */
export function watchdogPids(): number[] {
  try {
    return execFileSync('pgrep', ['-P', String(process.pid), '-f', 'rjob-watchdog'], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map(Number)
      .filter(isAlive);
  } catch {
    return [];
  }
}
