import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * The watchdog: one small `/bin/sh` per job type instance, holding the read end of a pipe whose
 * only writer is the owner. When the owner dies, however it dies (SIGKILL included), the kernel
 * closes that writer and `read` sees EOF; the watchdog then sends TERM to every group still
 * registered, waits up to the grace period for them to go, and sends KILL.
 *
 * Groups are registered as `+PGID` / `-PGID` lines appended to a file in a private temporary
 * directory ($2), read only at EOF. Writing them to the pipe instead would wake the shell for
 * every job, and `read` in sh takes a byte per system call: that cost showed up in every job's
 * start-to-exit time. If no temporary directory can be made, the lines go to the pipe ($2 empty).
 *
 * It ignores terminal and hang-up signals and runs in its own session, so a Ctrl-C meant for the
 * owner, or the terminal closing, cannot take it down before it has done its work.
 *
 * $1 is the grace in tenths of a second.
 */
const SCRIPT = `trap '' HUP INT QUIT TSTP TTIN TTOU PIPE
t=$1
d=$2
g=' '
apply() {
  p=\${1#?}
  case $1 in
    +*) g="$g$p " ;;
    -*) case $g in *" $p "*) g="\${g%% $p *} \${g#* $p }" ;; esac ;;
  esac
}
while IFS= read -r l; do apply "$l"; done
if [ -n "$d" ]; then
  if [ -f "$d/groups" ]; then
    while IFS= read -r l; do apply "$l"; done < "$d/groups"
  fi
  rm -rf "$d"
fi
set -- $g
[ $# -eq 0 ] && exit 0
for p; do kill -s TERM -- "-$p" 2>/dev/null; done
i=0
while [ $i -lt $t ]; do
  a=
  for p; do kill -s 0 -- "-$p" 2>/dev/null && { a=1; break; }; done
  [ -z "$a" ] && exit 0
  sleep 0.1
  i=$((i + 1))
done
for p; do kill -s KILL -- "-$p" 2>/dev/null; done
`;

// The registry file is rewritten with only the live groups once it has grown past this.
const COMPACT_AT_BYTES = 64 * 1024;

/**
 * Keeps every registered process group from outliving the owning process.
 *
 * Races, and why they are acceptable:
 * - A group exists between `spawn()` returning and {@link GroupWatchdog.register}; both happen in
 *   one synchronous stretch of JS and the registration is a synchronous write, so only a SIGKILL
 *   landing inside those few microseconds can leak a group.
 * - The watchdog reads the registry only after EOF, when the owner is gone and nothing writes it
 *   any more; a compaction is a whole new file renamed over the old one, so it reads either.
 * - A group is unregistered only after its leader was reaped and its leftovers were killed; a
 *   pgid cannot be reused while any member is alive, so the watchdog never signals a stranger's
 *   group unless the pid space wraps inside that window.
 * - A descendant that leaves the group (`setsid`, double-fork daemons) escapes; containing those
 *   needs cgroups, which is out of scope.
 * - If the watchdog itself is killed, a new one is started and told every live group.
 */
export class GroupWatchdog {
  readonly #graceTicks: number;
  readonly #groups = new Set<number>();
  #child: ChildProcess | undefined;
  #disposed = false;
  /** The private directory holding the registry; undefined when registering through the pipe. */
  #dir: string | undefined;
  #fd: number | undefined;
  #fileBytes = 0;

  constructor(graceMs: number) {
    this.#graceTicks = Math.max(1, Math.ceil(graceMs / 100));
  }

  register(pgid: number): void {
    this.#groups.add(pgid);
    this.#record(`+${pgid}\n`);
  }

  unregister(pgid: number): void {
    if (this.#groups.delete(pgid) && this.#child) this.#record(`-${pgid}\n`);
  }

  /** Ends the watchdog; it first kills (TERM, then KILL after the grace) any group still registered. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#closeFile();
    const child = this.#child;
    this.#child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) {
      if (this.#dir) rmSync(this.#dir, { recursive: true, force: true });
      return;
    }
    // The watchdog removes the directory itself, after reading it. Ref it again while waiting:
    // otherwise an owner with nothing else to do would exit with this promise unsettled.
    const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
    child.ref();
    child.stdin?.end();
    await exited;
  }

  #record(line: string): void {
    if (this.#disposed) return;
    if (!this.#child) {
      this.#start();
      return;
    }
    if (this.#fd === undefined) {
      this.#child.stdin?.write(line);
      return;
    }
    try {
      this.#fileBytes += writeSync(this.#fd, line);
      if (this.#fileBytes > COMPACT_AT_BYTES && this.#fileBytes > 32 * this.#groups.size) this.#rewrite();
    } catch {
      this.#toPipe();
    }
  }

  // Starts a watchdog and tells it every live group: the first one, or a replacement for one
  // that was killed.
  #start(): void {
    if (this.#dir === undefined) {
      try {
        this.#dir = mkdtempSync(join(tmpdir(), 'rjob-watchdog-'));
      } catch {
        // No usable temporary directory: register through the pipe instead.
      }
    }
    const child = spawn(
      '/bin/sh',
      ['-c', SCRIPT, 'rjob-watchdog', String(this.#graceTicks), this.#dir ?? ''],
      {
        detached: true,
        stdio: ['pipe', 'ignore', 'ignore'],
      },
    );
    // The watchdog must never be the reason the owner stays alive.
    child.unref();
    (child.stdin as unknown as { unref?: () => void } | null)?.unref?.();
    // EPIPE after the watchdog died; the exit handler below replaces it.
    child.stdin?.on('error', () => {});
    child.on('error', () => {});
    if (child.pid === undefined) return;
    this.#child = child;
    const startedMs = Date.now();
    child.once('exit', () => {
      if (this.#child !== child) return;
      this.#child = undefined;
      // A watchdog that dies at once would die again; wait for the next register to retry.
      if (!this.#disposed && this.#groups.size > 0 && Date.now() - startedMs > 1000) this.#start();
    });
    if (this.#dir !== undefined) {
      try {
        this.#rewrite();
        return;
      } catch {
        // fall through to the pipe
      }
    }
    this.#toPipe();
  }

  // The registry file failed (disk full, directory removed): drop it, so the watchdog cannot
  // read stale lines from it, and tell the pipe every live group instead.
  #toPipe(): void {
    this.#closeFile();
    if (this.#dir !== undefined) {
      try {
        rmSync(this.#dir, { recursive: true, force: true });
      } catch {
        // nothing more to do
      }
      this.#dir = undefined;
    }
    let lines = '';
    for (const pgid of this.#groups) lines += `+${pgid}\n`;
    if (lines) this.#child?.stdin?.write(lines);
  }

  /** Replaces the registry with the live groups only, atomically, and appends to the new one. */
  #rewrite(): void {
    const dir = this.#dir!;
    let lines = '';
    for (const pgid of this.#groups) lines += `+${pgid}\n`;
    writeFileSync(join(dir, 'groups.next'), lines, { mode: 0o600 });
    renameSync(join(dir, 'groups.next'), join(dir, 'groups'));
    this.#closeFile();
    this.#fd = openSync(join(dir, 'groups'), 'a', 0o600);
    this.#fileBytes = lines.length;
  }

  #closeFile(): void {
    if (this.#fd === undefined) return;
    try {
      closeSync(this.#fd);
    } catch {
      // already closed
    }
    this.#fd = undefined;
  }
}
