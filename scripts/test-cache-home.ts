/**
 * Vitest global setup: the rjob bins the tests start keep their code cache (bin/rjob.cjs) in a
 * temporary cache home, removed after the run, not in the user's ~/.cache. Set before the test
 * processes start, so they and every bin they spawn inherit it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export default function setup(): () => void {
  const dir = mkdtempSync(join(tmpdir(), 'rjob-test-cache-'));
  const before = process.env.XDG_CACHE_HOME;
  process.env.XDG_CACHE_HOME = dir;
  return () => {
    if (before === undefined) delete process.env.XDG_CACHE_HOME;
    else process.env.XDG_CACHE_HOME = before;
    rmSync(dir, { recursive: true, force: true });
  };
}
