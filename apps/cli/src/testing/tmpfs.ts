/**
 * A small tmpfs for the full-disk tests. Needs root (`mount`): a test that uses it fails, never
 * skips, where it cannot mount. Disposing unmounts it and deletes the mount point.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, open, rm, stat, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface Tmpfs extends AsyncDisposable {
  /** The mount point (mode 0700). */
  dir: string;
  /** Fills the file system with a filler file, then frees `leaveBytes` of it again. */
  fill(leaveBytes?: number): Promise<void>;
  /** Deletes the filler file. */
  free(): Promise<void>;
}

export async function mountTmpfs(sizeBytes: number): Promise<Tmpfs> {
  // Short: the agent's socket lives inside.
  const dir = await mkdtemp(join(tmpdir(), 'rjob-fs-'));
  try {
    await run('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes},mode=0700`, 'tmpfs', dir]);
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(`cannot mount a tmpfs on ${dir} (this test needs root): ${(error as Error).message}`);
  }
  const filler = join(dir, 'filler');
  return {
    dir,
    async fill(leaveBytes = 0) {
      const handle = await open(filler, 'a');
      const chunk = Buffer.alloc(4096, 0x66);
      try {
        for (;;) await handle.write(chunk);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
      } finally {
        await handle.close();
      }
      if (leaveBytes > 0) await truncate(filler, Math.max(0, (await stat(filler)).size - leaveBytes));
    },
    async free() {
      await rm(filler, { force: true });
    },
    async [Symbol.asyncDispose]() {
      await run('umount', [dir]).catch(() => run('umount', ['-l', dir]));
      await rm(dir, { recursive: true, force: true });
    },
  };
}
