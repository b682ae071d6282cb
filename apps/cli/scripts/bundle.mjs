// @ts-check
/**
 * Build step after `tsc -b`: the `rjob` bin as an ESM bundle in dist/bundle (docs/decisions.md,
 * "CLI start-up"). One module graph of ~60 files becomes a handful of chunks: `rjob.mjs` and the
 * chunks a verb needs load at start, the SSH and WebSocket stacks and the agent server only when a
 * command uses them (esbuild keeps `await import()` lazy as separate chunks). The @rjob packages
 * are bundled from their sources; ssh2 and ws stay external (dependencies of this package).
 *
 * The job runtime starts ThreadJob workers and BackgroundJob node children from entry files next to
 * the module that names them (`new URL('./worker-entry.js', import.meta.url)`), so those two are
 * built as separate files into the same directory.
 */
import { rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const outdir = here('../dist/bundle');
const runtime = here('../../../packages/core/src/runtime/');

/** @type {import('esbuild').BuildOptions} */
const common = {
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  conditions: ['@rjob/source'],
  external: ['ssh2', 'ws', 'esbuild'],
  legalComments: 'none',
  logLevel: 'warning',
  outdir,
};

await rm(outdir, { recursive: true, force: true });
// `.mjs`: node needs no package.json lookup to know the format of each chunk.
await esbuild.build({
  ...common,
  entryPoints: { rjob: here('../src/cli-entry.ts') },
  splitting: true,
  chunkNames: '[name]-[hash]',
  outExtension: { '.js': '.mjs' },
  banner: { js: '// rjob command line, bundled (apps/cli/scripts/bundle.mjs).' },
});
// This package is "type": "module", so these `.js` files are ES modules.
await esbuild.build({
  ...common,
  entryPoints: { 'worker-entry': `${runtime}worker-entry.js`, 'child-entry': `${runtime}child-entry.js` },
});
console.log(`wrote ${outdir}`);
