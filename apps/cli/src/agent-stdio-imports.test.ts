/**
 * `rjob agent --stdio` is what sshd runs for every session to a host: its start-up is part of
 * every session open and of every host in a fan-out. It must load only the bridge, not the core
 * library, the agent server or the transports. This follows the static imports (the ones loaded
 * before any code runs; `import type` is erased, `await import()` loads later) from the entries
 * that path runs, and fails when one of them drags a heavy module in.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

/** Workspace packages followed into, by name and subpath: where their sources start. */
const PACKAGES: Record<string, string> = {
  '@rjob/agent/cli': 'packages/agent/src/cli-main.ts',
  '@rjob/agent': 'packages/agent/src/index.ts',
  '@rjob/core': 'packages/core/src/index.ts',
};

const STATIC_IMPORT = /^\s*(?:import|export)\s+(?!type\b)(?:[^'";]*?\bfrom\s+)?['"]([^'"]+)['"]/gm;

/** Every module the entries load statically, as repository paths or bare package names. */
function staticClosure(entries: string[]): Set<string> {
  const seen = new Set<string>();
  const queue = [...entries];
  while (queue.length > 0) {
    const file = queue.shift()!;
    if (seen.has(file)) continue;
    seen.add(file);
    // Other packages are named, not followed.
    if (!file.startsWith('packages/') && !file.startsWith('apps/')) continue;
    const source = readFileSync(join(ROOT, file), 'utf8');
    for (const match of source.matchAll(STATIC_IMPORT)) {
      const specifier = match[1]!;
      if (specifier.startsWith('node:')) continue;
      if (specifier.startsWith('.')) {
        // Sources are TypeScript imported as `.js`; a few are plain JavaScript.
        const path = join(dirname(file), specifier);
        const ts = path.replace(/\.js$/, '.ts');
        queue.push(existsSync(join(ROOT, ts)) ? ts : path);
      } else {
        queue.push(PACKAGES[specifier] ?? specifier);
      }
    }
  }
  return seen;
}

const HEAVY = [
  'packages/core/src/index.ts',
  'packages/agent/src/index.ts',
  'packages/agent/src/server/agent-server.ts',
  'packages/agent/src/spool/record-spool.ts',
  'packages/agent/src/doors/unix-door.ts',
];

describe('the `--stdio` bridge loads only what it needs', () => {
  it('the import walk sees through relative imports, packages and re-exports (it can fail)', () => {
    const all = staticClosure(['packages/agent/src/index.ts']);
    expect(all).toContain('packages/agent/src/server/agent-server.ts');
    expect(all).toContain('packages/core/src/index.ts');
    expect(all).toContain('packages/agent/src/doors/stdio-bridge.ts');
  });

  it('rjob agent --stdio: the CLI entry and its agent command', () => {
    const loaded = staticClosure(['apps/cli/src/cli-entry.ts', 'apps/cli/src/commands/agent.ts']);
    expect(loaded).toContain('packages/agent/src/cli-main.ts');
    expect(loaded).toContain('packages/agent/src/doors/stdio-bridge.ts');
    for (const heavy of [...HEAVY, 'ssh2', 'ws']) expect(loaded).not.toContain(heavy);
  });

  it('rjob-agent --stdio: the agent package’s own entry', () => {
    const loaded = staticClosure(['packages/agent/src/cli-entry.ts']);
    expect(loaded).toContain('packages/agent/src/doors/stdio-bridge.ts');
    for (const heavy of HEAVY) expect(loaded).not.toContain(heavy);
  });
});

describe('local job verbs load neither the remote transports nor the agent server', () => {
  it('rjob get / start / receive: the CLI entry, the job verbs and the local agent helpers', () => {
    const loaded = staticClosure([
      'apps/cli/src/cli-entry.ts',
      'apps/cli/src/commands/jobs.ts',
      'apps/cli/src/commands/receive.ts',
      'apps/cli/src/local-agent.ts',
    ]);
    expect(loaded).toContain('apps/cli/src/targets.ts');
    expect(loaded).toContain('packages/agent/src/cli-main.ts');
    for (const heavy of [
      'packages/agent/src/index.ts',
      'packages/agent/src/server/agent-server.ts',
      'packages/agent/src/spool/record-spool.ts',
      '@rjob/transport-ssh',
      '@rjob/transport-ws',
      'ssh2',
      'ws',
    ]) {
      expect(loaded).not.toContain(heavy);
    }
  });
});
