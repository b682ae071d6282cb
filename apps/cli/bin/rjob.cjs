#!/usr/bin/env node
// The built CLI: the bundle in dist/bundle (a published install, and a clone after `npm ci`, whose
// `prepare` script builds). Without a build, the TypeScript sources (run-source.js). Only what the
// check needs loads here: this file runs before every command.
//
// The bundle is one script, compiled with a V8 code cache kept per user (docs/decisions.md, "CLI
// start-up"): a command after the first of its verb skips most of parsing and compiling the code it
// runs. ssh2 is a second script (dist/bundle/ssh2.cjs) with a cache of its own, compiled only when a
// command first requires it. A cache is named after its script's path, size and time and node's
// version, so an upgraded rjob never reads an old one (V8 also rejects another node's). A failure
// to read or write it only costs time.
//
// This file is CommonJS: node starts a CommonJS main file with less work than an ES module one
// (no module loader to set up first), which every command pays.
const { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } =
  process.getBuiltinModule('node:fs');
const { dirname, join } = process.getBuiltinModule('node:path');
const file = join(__dirname, '..', 'dist', 'bundle', 'rjob.cjs');
if (!existsSync(file)) {
  import('./run-source.js');
} else {
  const env = process.env;
  // $HOME is what os.homedir() returns when set; node:os is loaded only when it is not.
  const home = () => env.HOME || process.getBuiltinModule('node:os').homedir();
  const cacheDir = join(env.XDG_CACHE_HOME || join(home(), '.cache'), 'rjob');
  const dir = dirname(file);
  // One cache per verb (`agent` and `session` with their subcommand): each holds what that
  // command compiles, and `agent --stdio` does not load the daemon's.
  const [verb = '', sub = ''] = process.argv.slice(2);
  const word = (arg) => (/^-{0,2}[a-z][a-z-]{0,19}$/.test(arg) ? arg.replace(/^-+/, '') : 'other');
  const name = verb === 'agent' || verb === 'session' ? `${verb}-${word(sub)}` : word(verb);
  const ssh2 = join(dir, 'ssh2.cjs');
  let ssh2Module;
  // The bundle requires built-ins and its external packages through this: packages resolve from
  // this package as from the bundle beside it, and ssh2 comes from its own cached script.
  const bundleRequire = Object.assign(
    (id) => {
      if (id !== 'ssh2' || !existsSync(ssh2)) return require(id);
      if (!ssh2Module) {
        ssh2Module = { exports: {} };
        const wrapper = '(function (exports, require, module, __filename, __dirname) {';
        compile(ssh2, wrapper, 'lib-ssh2', cacheDir)(ssh2Module.exports, require, ssh2Module, ssh2, dir);
      }
      return ssh2Module.exports;
    },
    { resolve: require.resolve, cache: require.cache },
  );
  const run = compile(
    file,
    '(function (exports, require, module, __filename, __dirname, __rjobImport) {',
    name,
    cacheDir,
  );
  const module = { exports: {} };
  run(module.exports, bundleRequire, module, file, dir, (specifier) => import(specifier));
}

/** Compiles `path` as the function `wrapper` opens, with its code cache `label` in `cacheDir`. */
function compile(path, wrapper, label, cacheDir) {
  const source = readFileSync(path, 'utf8');
  let key;
  let cacheFile;
  let cachedData;
  try {
    const { size, mtimeMs } = statSync(path);
    // This install (its path), then this build of it and this node: an upgrade replaces only the
    // install's own caches, never another install's.
    key = `${hash(path)}-${hash(`${size}\0${mtimeMs}\0${process.version}`)}`;
    cacheFile = join(cacheDir, `cli-${key}-${label}.v8`);
    cachedData = readFileSync(cacheFile);
  } catch {}
  const { Script } = process.getBuiltinModule('node:vm');
  const script = new Script(`${wrapper}${source}\n})`, {
    filename: path,
    ...(cachedData ? { cachedData } : {}),
  });
  if (cacheFile && (!cachedData || script.cachedDataRejected)) {
    // At exit: the cache then holds the functions this command compiled, not only the top level.
    process.once('exit', () => {
      try {
        mkdirSync(cacheDir, { recursive: true, mode: 0o700 });
        const temp = `${cacheFile}.${process.pid}.tmp`;
        writeFileSync(temp, script.createCachedData(), { mode: 0o600 });
        renameSync(temp, cacheFile);
        // Caches of another build of this script (before an upgrade) or of another node are
        // never read again.
        for (const old of readdirSync(cacheDir)) {
          if (old.startsWith(`cli-${key.slice(0, 8)}-`) && !old.startsWith(`cli-${key}-`))
            rmSync(join(cacheDir, old), { force: true });
        }
      } catch {}
    });
  }
  return script.runInThisContext();
}

/** FNV-1a, 32 bits, in hex: names the cache file without loading node:crypto. */
function hash(text) {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h.toString(16).padStart(8, '0');
}
