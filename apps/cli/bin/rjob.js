#!/usr/bin/env node
// The built CLI when there is one (a published install); otherwise the TypeScript source, so a fresh
// clone works right after `npm ci`. The source runs in a child node started with tsx and the
// `source` export condition: conditions can only be set when node starts, and the agent daemon this
// CLI spawns inherits the same flags through process.execArgv.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';

const built = new URL('../dist/cli-entry.js', import.meta.url);
if (existsSync(built)) {
  await import(built.href);
} else {
  let tsx;
  try {
    // Resolved from here, not from the cwd, so `rjob` works from any directory.
    tsx = import.meta.resolve('tsx');
  } catch {
    process.stderr.write(
      'rjob: not built and tsx is not installed; run npm ci or npm run build (ERR_NOT_BUILT)\n',
    );
    process.exit(10);
  }
  const entry = fileURLToPath(new URL('../src/cli-entry.ts', import.meta.url));
  const child = spawn(
    process.execPath,
    ['--conditions=source', '--import', tsx, entry, ...process.argv.slice(2)],
    { stdio: 'inherit' },
  );
  // A terminal's Ctrl-C reaches the child too (same process group); only the child decides.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(signal, () => {
      if (signal !== 'SIGINT') child.kill(signal);
    });
  }
  child.on('exit', (code, signal) => {
    process.exitCode = code ?? 128 + (constants.signals[signal] ?? 1);
  });
}
