import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';

export interface WriteFileAtomicOptions {
  /**
   * fsync the data before the rename, so that after a power loss the file holds either the old or
   * the new content, never an empty one. A SIGKILL cannot tear it either way. Default true.
   */
  fsync?: boolean;
  /** Mode of a newly created file. Default 0o600. */
  mode?: number;
}

/** Suffix of the temporary files {@link writeFileAtomic} leaves behind when it is killed. */
export const TEMP_MARKER = '.tmp-';

/**
 * Replaces `path` with `data` all at once: writes a temporary file beside it, then renames it over
 * the target. Readers (and a reopened agent) see the old content or the new, never a mix.
 */
export async function writeFileAtomic(
  path: string,
  data: Uint8Array,
  options: WriteFileAtomicOptions = {},
): Promise<void> {
  const temp = `${path}${TEMP_MARKER}${process.pid}-${randomBytes(4).toString('hex')}`;
  const handle = await open(temp, 'w', options.mode ?? 0o600);
  try {
    try {
      await handle.writeFile(data);
      if (options.fsync ?? true) await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, path);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}
