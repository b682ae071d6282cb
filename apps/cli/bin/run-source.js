// @ts-check
// `rjob` from its TypeScript sources, for a checkout that was not built (bin/rjob.cjs decides): a
// child node started with tsx and the repository's `@rjob/source` export condition. Conditions can
// only be set when node starts, and the agent daemon this CLI spawns inherits the same flags
// (process.execArgv).
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';

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
  ['--conditions=@rjob/source', '--import', tsx, entry, ...process.argv.slice(2)],
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
