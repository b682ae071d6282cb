// @ts-check
/**
 * Build step after `tsc -b`: the `rjob` bin as one script, dist/bundle/rjob.cjs (docs/decisions.md,
 * "CLI start-up"). bin/rjob.cjs compiles it with a V8 code cache, which node 20 offers for scripts
 * only (not for ES modules). Modules a command loads with `await import()` stay lazy: esbuild wraps
 * them in functions that run on first use, so `rjob get` evaluates only its own code. The @rjob
 * packages are bundled from their sources; ssh2 and ws stay external (dependencies of this package,
 * required on first use).
 *
 * A script compiled by `vm.Script` cannot `import()` by itself: the dynamic imports that remain
 * (plugins, node built-ins loaded late, esbuild for agent deployment) call `__rjobImport`, which
 * bin/rjob.cjs passes in.
 *
 * The job runtime starts ThreadJob workers and BackgroundJob node children from entry files next to
 * the module that names them (`new URL('./worker-entry.js', import.meta.url)`), so those two are
 * built as separate files into the same directory.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
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
const built = await esbuild.build({
  ...common,
  entryPoints: { rjob: here('../src/cli-entry.ts') },
  format: 'cjs',
  outExtension: { '.js': '.cjs' },
  // Every start reads and hashes the whole file: without spaces it is a third smaller. Names stay,
  // so stack traces still read.
  minifyWhitespace: true,
  minifySyntax: true,
  write: false,
  // What ES modules find in import.meta, for a script: its own URL, and resolution from it.
  // And this CLI's version, so a command does not read package.json to compare it with the agent's.
  define: {
    'import.meta.url': '__rjobUrl',
    'import.meta.resolve': '__rjobResolve',
    __RJOB_CLI_VERSION__: JSON.stringify(JSON.parse(await readFile(here('../package.json'), 'utf8')).version),
  },
  banner: {
    js: [
      '// rjob command line, bundled (apps/cli/scripts/bundle.mjs); loaded by bin/rjob.cjs.',
      'var __rjobUrl = require("node:url").pathToFileURL(__filename).href;',
      'var __rjobResolve = (specifier) => require("node:url").pathToFileURL(require.resolve(specifier)).href;',
    ].join('\n'),
  },
});
const DYNAMIC_IMPORT = /(?<![\w$.])import\((?=[\w"'`])/g;
for (const file of built.outputFiles) {
  const text = file.text.replace(DYNAMIC_IMPORT, '__rjobImport(');
  await mkdir(dirname(file.path), { recursive: true });
  await writeFile(file.path, text);
}
// ssh2 as one script of its own (with asn1 and bcrypt-pbkdf), which bin/rjob.cjs loads with a code
// cache of its own when a command first requires it: only the commands that reach SSH pay for it,
// and they skip compiling its ~40 files on every start. Its optional native parts stay optional.
await esbuild.build({
  ...common,
  entryPoints: { ssh2: createRequire(here('../package.json')).resolve('ssh2') },
  external: ['cpu-features', '*.node'],
  format: 'cjs',
  outExtension: { '.js': '.cjs' },
  minifyWhitespace: true,
  minifySyntax: true,
  banner: {
    js: '// ssh2, bundled for the rjob command line (apps/cli/scripts/bundle.mjs); loaded by bin/rjob.cjs.',
  },
});
// This package is "type": "module", so these `.js` files are ES modules.
await esbuild.build({
  ...common,
  entryPoints: { 'worker-entry': `${runtime}worker-entry.js`, 'child-entry': `${runtime}child-entry.js` },
});
console.log(`wrote ${outdir}`);
