/**
 * Plugins from the config file: job types and target transports that modules add to the agent
 * daemon (`rjob start --type NAME`, `invoke -c cmd://… --as-job`) and to this CLI process (plain
 * `invoke -c cmd://…`, `session new`, `enter`). The file is `$RJOB_CONFIG`, else
 * `$XDG_CONFIG_HOME/rjob/config.json`, else `~/.config/rjob/config.json`:
 *
 *     { "plugins": ["./my-job-type.mjs", "@acme/rjob-docker"] }
 *
 * Each entry is a module path (relative to the config file) or a package name (resolved from the
 * config file's directory); the module default-exports (or exports as `rjobPlugin`) an
 * `RjobPlugin`. A module that cannot be loaded is left out with a coded error (ERR_PLUGIN_LOAD,
 * ERR_PLUGIN_CONFIG for the file itself), and the others are used: a broken plugin never keeps
 * local jobs from running. Nothing here loads on a command's common path: the CLI reads the file
 * only when a target is not `localhost`, and imports the modules only when the file names some.
 */
import { fsp } from './lazy-fs.js';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { definePlugin, type JobType, RjobError, type TargetTransport } from '@rjob/core';
import { CliErrorCode } from './error-codes.js';
import type { CliIo } from './io.js';

/** A plugin the config named that could not be loaded (as @rjob/agent's PluginError). */
export interface PluginFailure {
  plugin: string;
  code: string;
  message: string;
}

export interface LoadedPlugins {
  /** The config file read, or undefined when there is none. */
  configPath: string | undefined;
  jobTypes: JobType[];
  transports: TargetTransport[];
  failures: PluginFailure[];
}

/**
 * Names (and aliases) of the job types every rjob agent has: a plugin may not take them, or
 * `rjob start` and `invoke --as-job` would start someone else's work.
 */
const BUILT_IN_TYPES = ['ThreadJob', 'thread', 'BackgroundJob', 'process', 'RemoteJob', 'remote'];

/** Where the config file is for this environment; `explicit` when `$RJOB_CONFIG` names it. */
export function configFile(env: CliIo['env'], cwd: string): { path: string; explicit: boolean } | undefined {
  if (env.RJOB_CONFIG) return { path: resolve(cwd, env.RJOB_CONFIG), explicit: true };
  const base = env.XDG_CONFIG_HOME || (env.HOME ? join(env.HOME, '.config') : undefined);
  return base ? { path: join(base, 'rjob', 'config.json'), explicit: false } : undefined;
}

const loads = new Map<string, Promise<LoadedPlugins>>();

/** The plugins of the config file for `io`'s environment, loaded once per process and file. */
export function loadPlugins(io: Pick<CliIo, 'env' | 'cwd'>): Promise<LoadedPlugins> {
  const file = configFile(io.env, io.cwd);
  const key = file ? `${file.explicit}:${file.path}` : '';
  let loading = loads.get(key);
  if (!loading) {
    loading = file ? loadConfig(file.path, file.explicit) : Promise.resolve(emptyPlugins(undefined));
    loads.set(key, loading);
  }
  return loading;
}

function emptyPlugins(configPath: string | undefined): LoadedPlugins {
  return { configPath, jobTypes: [], transports: [], failures: [] };
}

async function loadConfig(path: string, explicit: boolean): Promise<LoadedPlugins> {
  const loaded = emptyPlugins(path);
  const configError = (message: string): LoadedPlugins => {
    loaded.failures.push({ plugin: path, code: CliErrorCode.PluginConfig, message });
    return loaded;
  };
  let text: string;
  try {
    text = await fsp().readFile(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // No config file is the usual case; only one named by $RJOB_CONFIG must exist.
    if (code === 'ENOENT' && !explicit) return emptyPlugins(undefined);
    return configError(`cannot read the config file ${path}: ${(error as Error).message}`);
  }
  let config: unknown;
  try {
    config = JSON.parse(text);
  } catch (error) {
    return configError(`the config file ${path} is not JSON: ${(error as Error).message}`);
  }
  const plugins = (config as { plugins?: unknown } | null)?.plugins ?? [];
  if (
    typeof config !== 'object' ||
    config === null ||
    !Array.isArray(plugins) ||
    !plugins.every((each) => typeof each === 'string' && each.length > 0)
  ) {
    return configError(`the config file ${path} needs "plugins": a list of module paths or package names`);
  }
  const taken = new Set(BUILT_IN_TYPES.map((name) => name.toLowerCase()));
  // In the order named: the first transport that accepts a target wins.
  const modules = await Promise.all(plugins.map((spec: string) => importPlugin(spec, path)));
  for (const [index, module] of modules.entries()) {
    const spec = plugins[index] as string;
    if ('failure' in module) {
      loaded.failures.push(module.failure);
      continue;
    }
    const names = (module.plugin.jobTypes ?? []).flatMap((type) => [type.name, ...(type.aliases ?? [])]);
    const clash = names.find((name) => taken.has(name.toLowerCase()));
    if (clash !== undefined) {
      loaded.failures.push({
        plugin: spec,
        code: CliErrorCode.PluginLoad,
        message: `plugin ${spec}: the job type name ${clash} is already taken`,
      });
      continue;
    }
    for (const name of names) taken.add(name.toLowerCase());
    loaded.jobTypes.push(...(module.plugin.jobTypes ?? []));
    loaded.transports.push(...(module.plugin.transports ?? []));
  }
  return loaded;
}

async function importPlugin(
  spec: string,
  configPath: string,
): Promise<{ plugin: import('@rjob/core').RjobPlugin } | { failure: PluginFailure }> {
  const fail = (message: string) => ({
    failure: { plugin: spec, code: CliErrorCode.PluginLoad, message: `plugin ${spec}: ${message}` },
  });
  let file: string;
  if (spec.startsWith('.') || isAbsolute(spec)) {
    file = resolve(dirname(configPath), spec);
    if (
      !(await fsp()
        .access(file)
        .then(
          () => true,
          () => false,
        ))
    )
      return fail(`no such file ${file}`);
  } else {
    try {
      file = process.getBuiltinModule('node:module').createRequire(configPath).resolve(spec);
    } catch {
      return fail(`no such package from ${dirname(configPath)}`);
    }
  }
  const url = pathToFileURL(file).href;
  let module: { default?: unknown; rjobPlugin?: unknown };
  try {
    module = await import(url);
  } catch (error) {
    return fail(`cannot be loaded: ${(error as Error).message?.split('\n')[0] ?? String(error)}`);
  }
  const exported = module.rjobPlugin ?? module.default;
  if (exported === undefined) return fail('exports no plugin (a default export or `rjobPlugin`)');
  try {
    return { plugin: definePlugin(exported as import('@rjob/core').RjobPlugin) };
  } catch (error) {
    return fail(RjobError.is(error) ? error.message : String(error));
  }
}

/** One line for a plugin that was not loaded, as the CLI and agent.log show it. */
export function failureLine(failure: PluginFailure): string {
  return `${failure.message} (${failure.code})`;
}
