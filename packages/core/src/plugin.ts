/**
 * The plugin contract: what a module adds to an rjob agent and CLI (docs/writing-a-job-type.md,
 * docs/writing-a-transport.md). A plugin module default-exports (or exports as `rjobPlugin`) an
 * {@link RjobPlugin}: job types that `rjob start --type NAME` and `jobs.start(NAME, …)` start, and
 * target transports that reach the targets they accept (`rjob invoke -c cmd://web1`). It depends
 * on `@rjob/core` as a peer and on nothing else of ours.
 */
import { ErrorCode, RjobError } from './errors.js';
import type { JobType } from './job/job-type.js';
import type { WorkRequest } from './session/rpc.js';
import type { Transport } from './transport/transport.js';

/** What the client that names a target gives along with it: how its own settings would reach it. */
export interface TargetSettings {
  /** The client's environment (only what matters for reaching hosts: `RJOB_*`, `HOME`, `SSH_AUTH_SOCK`, `XDG_*`). */
  env: Record<string, string>;
  /** The client's working directory (relative paths in a target resolve against it). */
  cwd: string | undefined;
  /** How long reaching the target may take, in ms. */
  connectTimeoutMs: number | undefined;
}

/**
 * A transport for targets written as text (`cmd://web1`, `docker://db`): says which targets it
 * takes and turns one into a {@link Transport} and that transport's own target.
 */
export interface TargetTransport {
  /** Shown in messages and in `rjob agent plugins` (`command`, `docker`). */
  readonly name: string;
  /**
   * The target prefix it takes, for help and messages (`cmd://`). Optional: {@link accepts}
   * decides.
   */
  readonly scheme?: string;
  /** True when this transport reaches `target` (as the user wrote it). The first that accepts wins. */
  accepts(target: string): boolean;
  /**
   * The transport to use for `target`, the target in its own form, and the name its records carry
   * (default: the target as written). Called for each connection; cache what is costly to build.
   */
  resolve(
    target: string,
    settings: TargetSettings,
  ): Promise<{ transport: Transport<any>; target: unknown; computerName?: string }>;
  /**
   * Optional: another way to run `work` when a session to `target` could not be opened with
   * `error` (a host with no agent, where a shell command can still run by plain exec): a job type
   * and its definition, with a one-line notice for the job's warning stream; undefined when there
   * is none for this work or this error. A RemoteJob then runs that job instead.
   */
  fallback?(
    target: string,
    settings: TargetSettings,
    work: WorkRequest,
    error: unknown,
  ): Promise<{ type: JobType<any>; definition: unknown; notice: string } | undefined>;
}

/** What a plugin module exports: job types and target transports, each optional. */
export interface RjobPlugin {
  /** Shown in messages. Default: the module as the configuration names it. */
  name?: string;
  jobTypes?: readonly JobType<any>[];
  transports?: readonly TargetTransport[];
}

/**
 * Checks a plugin's shape and gives it back (a plugin module's `export default definePlugin({…})`).
 * Throws ERR_INVALID_ARGUMENT naming what is wrong.
 */
export function definePlugin<P extends RjobPlugin>(plugin: P): P {
  const bad = (what: string): never => {
    throw new RjobError(ErrorCode.InvalidArgument, `A plugin needs ${what}.`);
  };
  if (typeof plugin !== 'object' || plugin === null) bad('to be an object');
  if (plugin.name !== undefined && typeof plugin.name !== 'string') bad('its name as text');
  if (plugin.jobTypes === undefined && plugin.transports === undefined) bad('jobTypes or transports');
  if (plugin.jobTypes !== undefined) {
    if (!Array.isArray(plugin.jobTypes)) bad('jobTypes as an array');
    for (const type of plugin.jobTypes ?? []) {
      if (typeof type?.name !== 'string' || type.name.length === 0 || typeof type.start !== 'function') {
        bad('job types with a name and a start function (defineJobType)');
      }
      if (type.aliases !== undefined && !type.aliases.every((alias: unknown) => typeof alias === 'string')) {
        bad(`job type ${type.name}'s aliases as text`);
      }
    }
  }
  if (plugin.transports !== undefined) {
    if (!Array.isArray(plugin.transports)) bad('transports as an array');
    for (const transport of plugin.transports ?? []) {
      if (
        typeof transport?.name !== 'string' ||
        transport.name.length === 0 ||
        typeof transport.accepts !== 'function' ||
        typeof transport.resolve !== 'function'
      ) {
        bad('transports with a name, accepts(target) and resolve(target, settings)');
      }
    }
  }
  return plugin;
}
