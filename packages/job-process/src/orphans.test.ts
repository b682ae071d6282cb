import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, it } from 'vitest';
import { eventually, groupMembers, isAlive, killAll } from './test-utils.js';

const OWNER = fileURLToPath(new URL('./fixtures/orphan-owner.ts', import.meta.url));
const CLOSING_OWNER = fileURLToPath(new URL('./fixtures/close-owner.ts', import.meta.url));
const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

let owner: ChildProcess | undefined;
const seen = new Set<number>();

afterEach(() => {
  owner?.kill('SIGKILL');
  killAll(seen);
  seen.clear();
});

/** Resolves with the owner's stdout once `done` accepts it. */
function readUntil(child: ChildProcess, done: (text: string) => boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      text += chunk;
      if (done(text)) resolve(text);
    });
    child.once('exit', (code, signal) =>
      reject(new Error(`owner exited early (${code ?? signal}): ${text}`)),
    );
  });
}

it('kills a job, its child and its grandchild when the owner is SIGKILLed', async () => {
  owner = spawn(process.execPath, ['--conditions=@rjob/source', '--import', 'tsx', OWNER], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const text = await readUntil(owner, (t) => /^outer .*\n/m.test(t) && /^inner .*\n/m.test(t));
  // outer: the job's shell ($$, also the group id), its `sleep`, and the inner shell (which
  // execs into a `sleep`); inner: the inner shell's own background `sleep`, a grandchild.
  const [, shell, sleep, inner] = /^outer (\d+) (\d+) (\d+)$/m.exec(text)!.map(Number);
  const [, grandchild] = /^inner (\d+)$/m.exec(text)!.map(Number);
  const pgid = shell!;
  const pids = [shell!, sleep!, inner!, grandchild!];
  for (const pid of pids) seen.add(pid);
  await eventually(() => groupMembers(pgid).length === 4, 'all four job processes to be in the group');
  expect(groupMembers(pgid).sort()).toEqual([...pids].sort());
  // The grandchild really is one: its parent is the inner shell, not the job's shell.
  expect(Number(execFileSync('ps', ['-o', 'ppid=', '-p', String(grandchild)], { encoding: 'utf8' }))).toBe(
    inner,
  );

  const watchdog = Number(
    execFileSync('pgrep', ['-P', String(owner.pid), '-f', 'rjob-watchdog'], { encoding: 'utf8' }).trim(),
  );
  seen.add(watchdog);

  owner.kill('SIGKILL');
  await eventually(() => pids.every((pid) => !isAlive(pid)), 'every job process to die');
  expect(groupMembers(pgid)).toEqual([]);
  // Its work done, the watchdog goes too.
  await eventually(() => !isAlive(watchdog), 'the watchdog to exit');
});

it('lets an owner that closed its manager exit on its own', async () => {
  owner = spawn(process.execPath, ['--conditions=@rjob/source', '--import', 'tsx', CLOSING_OWNER], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let text = '';
  owner.stdout!.setEncoding('utf8');
  owner.stdout!.on('data', (chunk: string) => {
    text += chunk;
  });
  const code = await new Promise((resolve) => owner!.once('close', resolve));
  expect(text).toBe('from-shell\nfrom-node\nclosed Stopped\n');
  expect(code).toBe(0);
});
