import { type ChildProcess, spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

/** True while a process with this pid exists (signal 0 checks without sending anything). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Ends the agent daemon whose pid file is in `stateDir`: TERM first so it closes its sessions, then
 * KILL to its process group (the daemon leads it) if it is still there after about 10 s.
 */
export async function stopDaemonIn(stateDir: string): Promise<void> {
  const pid = Number((await readFile(join(stateDir, 'agent.pid'), 'utf8').catch(() => '')).trim());
  if (!pid || !alive(pid)) return;
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 500 && alive(pid); i++) await new Promise((resolve) => setTimeout(resolve, 20));
  if (alive(pid)) process.kill(-pid, 'SIGKILL');
}

/** Kills (with their process groups, so their jobs too) the agent daemons serving `stateDir`. */
export function killDaemonsIn(stateDir: string): void {
  const found = spawnSync('pgrep', ['-f', `agent daemon --state-dir ${stateDir} `], { encoding: 'utf8' });
  for (const pid of (found.stdout ?? '').split('\n').filter(Boolean).map(Number)) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone already.
      }
    }
  }
}

/** Resolves with the first stderr match of `pattern` (or rejects when the child exits first). */
export function waitForLine(child: ChildProcess, pattern: RegExp): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const onData = (chunk: Buffer): void => {
      buffered += chunk.toString('utf8');
      const match = pattern.exec(buffered);
      if (match) {
        child.stderr!.off('data', onData);
        resolve(match);
      }
    };
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`exited with ${code}: ${buffered}`)));
  });
}
