/**
 * The job verbs (Start-Job, Get-Job, Wait-Job, Stop-Job, Remove-Job; Receive-Job is receive.ts).
 * Local jobs live in the local agent's `local` session; with `-s NAME` they live in that session's
 * agent.
 */
import { resolve } from 'node:path';
import { isTerminal, JobState, type RemoteJobInfo, type Session, type WorkRequest } from '@rjob/core';
import { bool, durationMs, parse, parseCommand, selectors, str, strs } from '../args.js';
import { jobJson, jobTable, jsonReplacer } from '../format.js';
import { helpFor } from '../help.js';
import { CliError, type CliIo, ExitCode, usageError } from '../io.js';
import { onJobSession, withContext } from '../run-command.js';
import { CliErrorCode } from '../error-codes.js';
import { builtInType, checkJobType } from '../job-types.js';
import { ErrorCode } from '@rjob/core';

export const SESSION_OPTION = { session: { type: 'string', short: 's' } } as const;

export async function start(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals, rest } = parseCommand(argv, {
    ...SESSION_OPTION,
    name: { type: 'string', short: 'n' },
    label: { type: 'string', short: 'l' },
    type: { type: 'string', short: 't' },
    definition: { type: 'string', short: 'd' },
    eval: { type: 'string', short: 'e' },
    file: { type: 'string', short: 'f' },
    computer: { type: 'string', short: 'c' },
    json: { type: 'boolean' },
    bytes: { type: 'boolean' },
    after: { type: 'string', short: 'a', multiple: true },
    group: { type: 'string', short: 'g' },
    'stdin-open': { type: 'boolean' },
  });
  if (values.help) return helpFor('start', io);
  if (str(values.computer) !== undefined) {
    // A job started over a temporary connection would end with it (S4): never lose it silently.
    throw usageError(
      'start -c would lose the job when the connection ends; open a session (rjob session new HOST --name S) and use -s S, or use rjob invoke -c HOST --as-job',
    );
  }
  const sessionName = str(values.session);
  const type = str(values.type);
  const flags: WorkFlags = {
    type,
    definition: str(values.definition),
    eval: str(values.eval),
    file: str(values.file),
    positionals,
    rest,
    bytes: bool(values.bytes),
  };
  // Only jobs in the local agent run in the caller's directory; `enter` and -s are remote.
  const local = sessionName === undefined && io.session === undefined;
  // A plugin's type is checked with the agent first: an unknown name is refused with those it has.
  const custom = type !== undefined && builtInType(type) === undefined;
  const request = custom ? undefined : startRequest(flags, values, io, local);
  // One key for this command: a start repeated after a take-over answers with the job it started.
  // node:crypto fetched here, not imported: the other verbs of this module start without it.
  const requestKey = process.getBuiltinModule('node:crypto').randomUUID();
  return withContext(io, str(values['state-dir']), async (ctx) => {
    const info = await onJobSession(ctx, sessionName, async (session) => {
      if (custom) await checkJobType(session, type);
      const work = request ?? startRequest(flags, values, io, local);
      work.requestKey = requestKey;
      return session.jobs.start(work);
    });
    io.stdout.write(values.json ? `${JSON.stringify(jobJson(info), jsonReplacer)}\n` : jobTable([info]));
    return ExitCode.Ok;
  });
}

/** `start`'s request: the work from the flags, with its name, label, queue and stdin flags. */
function startRequest(
  flags: WorkFlags,
  values: Record<string, unknown>,
  io: CliIo,
  local: boolean,
): WorkRequest {
  const request = workRequest(flags, io, local);
  const name = str(values.name);
  if (name !== undefined) {
    if (/^\d+$/.test(name)) throw usageError('a job name cannot be all digits (it would read as an id)');
    request.name = name;
  }
  const label = str(values.label);
  if (label !== undefined) request.label = label;
  Object.assign(request, queueFlags(strs(values.after), str(values.group)));
  if (bool(values['stdin-open'])) {
    const definition = request.definition as Record<string, unknown>;
    if (
      typeof definition !== 'object' ||
      definition === null ||
      !('command' in definition || 'file' in definition)
    ) {
      throw usageError('--stdin-open is for commands and programs (-- COMMAND or --file), not JavaScript');
    }
    definition.stdinOpen = true;
  }
  return request;
}

/** `--type NAME --definition JSON`: the definition as given, for the type to check. */
function definitionRequest(flags: WorkFlags): WorkRequest {
  if (flags.eval !== undefined || flags.file !== undefined || flags.rest !== undefined || flags.bytes) {
    throw usageError('--definition gives the whole job: not with -- COMMAND, --eval, --file or --bytes');
  }
  if (flags.positionals.length > 0) throw usageError(`unexpected argument ${flags.positionals[0]}`);
  try {
    return { type: flags.type ?? 'process', definition: JSON.parse(flags.definition!) };
  } catch (error) {
    throw usageError(`--definition is JSON: ${(error as Error).message}`);
  }
}

/** `--after ID[,ID…]` (repeatable) and `--group NAME` as a WorkRequest has them. */
function queueFlags(after: string[], group: string | undefined): Pick<WorkRequest, 'after' | 'group'> {
  const out: Pick<WorkRequest, 'after' | 'group'> = {};
  if (after.length > 0) {
    const items = after.flatMap((each) => each.split(',')).map((each) => each.trim());
    if (items.some((each) => each === ''))
      throw usageError('--after takes job ids or names separated by commas');
    out.after = selectors(items);
  }
  if (group !== undefined) {
    if (group === '') throw usageError('--group needs a group name');
    out.group = group;
  }
  return out;
}

/** The caller's environment as a job gets it: every variable that is set. */
function callerEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(env)) if (value !== undefined) out[key] = value;
  return out;
}

interface WorkFlags {
  type: string | undefined;
  /** `--definition JSON`: the job definition as is (what a plugin's job type takes). */
  definition?: string | undefined;
  eval: string | undefined;
  file: string | undefined;
  positionals: string[];
  rest: string[] | undefined;
  /** `--bytes`: stdout as raw chunks (a process definition's `stdout: 'bytes'`). */
  bytes?: boolean;
}

/**
 * The job definition from the flags: `-- CMD…`, `--eval JS` or `--file SCRIPT [-- ARGS…]` for
 * process and thread jobs, `--definition JSON` (as is) for any type, a plugin's included.
 */
export function workRequest(flags: WorkFlags, io: CliIo, local: boolean): WorkRequest {
  if (flags.definition !== undefined) return definitionRequest(flags);
  const type = builtInType(flags.type ?? 'process');
  if (type === undefined) {
    throw usageError(`--type ${flags.type} takes its job definition as --definition JSON`);
  }
  if (flags.positionals.length > 0) {
    throw usageError(`unexpected argument ${flags.positionals[0]}; put the command after --`);
  }
  const given = [flags.eval !== undefined, flags.file !== undefined, flags.rest !== undefined].filter(
    Boolean,
  );
  if (given.length === 0) throw usageError('nothing to run: give -- COMMAND, --eval JS or --file SCRIPT');
  if (flags.eval === undefined && flags.file === undefined && (flags.rest ?? []).length === 0) {
    throw usageError('nothing to run after --');
  }
  if (flags.eval !== undefined && flags.file !== undefined)
    throw usageError('--eval and --file cannot be combined');
  // Local jobs run where the user is, with the user's environment (as Start-Job and pueue do), not
  // the agent daemon's; remote ones in the session's directory and environment.
  const cwd = local ? { cwd: io.cwd, env: callerEnv(io.env), replaceEnv: true } : {};
  if (flags.bytes && (flags.eval !== undefined || type === 'thread')) {
    throw usageError('--bytes is for commands and programs (-- COMMAND or --file), not JavaScript');
  }
  const stdout = flags.bytes ? { stdout: 'bytes' as const } : {};
  if (flags.eval !== undefined) {
    const args = flags.rest ?? [];
    if (type === 'thread') return { type, definition: { eval: flags.eval, args } };
    return { type, definition: { eval: flags.eval, args, ...cwd } };
  }
  if (flags.file !== undefined) {
    if (type === 'thread') throw usageError('--file runs a program; use --type process (the default)');
    const file = local ? resolve(io.cwd, flags.file) : flags.file;
    return { type, definition: { file, args: flags.rest ?? [], ...cwd, ...stdout } };
  }
  if (type === 'thread') throw usageError('a thread job runs JavaScript: use --eval JS');
  // One word is a whole command line (`-- 'sleep 1; echo hi'`); several are joined as a shell would see them.
  return { type, definition: { command: (flags.rest ?? []).join(' '), ...cwd, ...stdout } };
}

export async function get(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(argv, {
    ...SESSION_OPTION,
    children: { type: 'boolean' },
    json: { type: 'boolean' },
    state: { type: 'string' },
    label: { type: 'string', short: 'l' },
  });
  if (values.help) return helpFor('get', io);
  const state = stateFlag(str(values.state));
  const label = labelMatcher(str(values.label));
  return withContext(io, str(values['state-dir']), async (ctx) => {
    const jobs = await onJobSession(ctx, str(values.session), async (session) => {
      const found = await findJobs(session, positionals);
      if (!bool(values.children)) return found;
      const childIds = found.flatMap((job) => job.childIds);
      const children =
        childIds.length > 0 ? await session.jobs.get({ ids: childIds, includeChildren: true }) : [];
      return [...found, ...children];
    });
    const shown = jobs.filter((job) => (!state || job.state === state) && label(job));
    if (values.json) io.stdout.write(`${JSON.stringify(shown.map(jobJson), jsonReplacer)}\n`);
    else if (shown.length > 0) io.stdout.write(jobTable(shown, terminalWidth(io)));
    return ExitCode.Ok;
  });
}

/** `--state` as typed (any case) checked against the job states, or a usage error. */
export function stateFlag(value: string | undefined, flag = '--state'): JobState | undefined {
  if (value === undefined) return undefined;
  const found = Object.values(JobState).find((state) => state.toLowerCase() === value.toLowerCase());
  if (!found) throw usageError(`${flag} is one of ${Object.values(JobState).join(', ')}, not ${value}`);
  return found;
}

/** `--label TEXT`: jobs whose label is TEXT (`*` and `?` as wildcards); none given: every job. */
export function labelMatcher(text: string | undefined): (job: RemoteJobInfo) => boolean {
  if (text === undefined) return () => true;
  const escaped = text
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  const pattern = new RegExp(`^${escaped}$`, 's');
  return (job) => job.label !== undefined && pattern.test(job.label);
}

/** A table for a terminal is cut to its width; piped output keeps every character. */
function terminalWidth(io: CliIo): { columns?: number } {
  const stdout = io.stdout as CliIo['stdout'] & { columns?: number };
  return stdout.isTTY && typeof stdout.columns === 'number' ? { columns: stdout.columns } : {};
}

/** Jobs named by ids or names (wildcards allowed); every literal one must exist. No selector: all. */
export async function findJobs(
  session: Session<unknown>,
  positionals: readonly string[],
): Promise<RemoteJobInfo[]> {
  if (positionals.length === 0) return session.jobs.get({});
  const out = new Map<number, RemoteJobInfo>();
  for (const selector of selectors(positionals)) {
    const filter = typeof selector === 'number' ? { ids: [selector] } : { names: [selector] };
    const jobs = await session.jobs.get({ ...filter, includeChildren: true });
    if (jobs.length === 0 && !(typeof selector === 'string' && /[*?]/.test(selector))) {
      throw new CliError(ExitCode.NotFound, ErrorCode.JobNotFound, `no job ${selector}${where(session)}`);
    }
    for (const job of jobs) out.set(job.id, job);
  }
  return [...out.values()];
}

const where = (session: Session<unknown>): string =>
  session.name === 'local' ? '' : ` in session ${session.name}`;

export function requireSelectors(positionals: readonly string[], verb: string): void {
  if (positionals.length === 0) throw usageError(`${verb} needs a job id or name`);
}

export async function wait(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(argv, {
    ...SESSION_OPTION,
    any: { type: 'boolean' },
    timeout: { type: 'string' },
    json: { type: 'boolean' },
  });
  if (values.help) return helpFor('wait', io);
  const timeout = str(values.timeout);
  const timeoutMs = timeout === undefined ? undefined : durationMs(timeout, '--timeout');
  return withContext(io, str(values['state-dir']), async (ctx) =>
    onJobSession(ctx, str(values.session), async (session) => {
      const jobs = await findJobs(session, positionals);
      if (jobs.length === 0) return ExitCode.Ok;
      const ids = jobs.map((job) => job.id);
      const done = await session.jobs.wait(ids, {
        ...(values.any ? { any: true } : {}),
        ...(timeoutMs === undefined ? {} : { timeoutMs }),
      });
      if (done.length === 0 && !jobs.every((job) => isTerminal(job.state))) {
        throw new CliError(
          ExitCode.Timeout,
          CliErrorCode.Timeout,
          `timed out after ${/^[\d.]+$/.test(timeout!) ? `${timeout}s` : timeout} waiting for job${ids.length > 1 ? 's' : ''} ${ids.join(', ')}`,
        );
      }
      io.stdout.write(values.json ? `${JSON.stringify(done.map(jobJson), jsonReplacer)}\n` : jobTable(done));
      return ExitCode.Ok;
    }),
  );
}

export async function stop(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(argv, { ...SESSION_OPTION });
  if (values.help) return helpFor('stop', io);
  requireSelectors(positionals, 'stop');
  return withContext(io, str(values['state-dir']), async (ctx) =>
    onJobSession(ctx, str(values.session), async (session) => {
      const ids = (await findJobs(session, positionals)).map((job) => job.id);
      const stopped = await session.jobs.stop(ids);
      io.stdout.write(jobTable(stopped));
      return ExitCode.Ok;
    }),
  );
}

export async function remove(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(argv, {
    ...SESSION_OPTION,
    force: { type: 'boolean' },
    state: { type: 'string' },
  });
  if (values.help) return helpFor('remove', io);
  const state = stateFlag(str(values.state));
  // `--state S` alone: every job in that state; with selectors, those of them in that state.
  if (state === undefined) requireSelectors(positionals, 'remove');
  return withContext(io, str(values['state-dir']), async (ctx) =>
    onJobSession(ctx, str(values.session), async (session) => {
      const found = await findJobs(session, positionals);
      const jobs = state === undefined ? found : found.filter((job) => job.state === state);
      if (jobs.length === 0) return ExitCode.Ok;
      const running = jobs.filter((job) => !isTerminal(job.state));
      if (running.length > 0 && !values.force) {
        throw new CliError(
          ExitCode.Refused,
          ErrorCode.JobRunning,
          `job ${running[0]!.id} (${running[0]!.name}) is ${running[0]!.state}; stop it first or use --force`,
        );
      }
      await session.jobs.remove(
        jobs.map((job) => job.id),
        { force: bool(values.force) },
      );
      return ExitCode.Ok;
    }),
  );
}

/**
 * `rjob clean`: removes finished jobs (Completed, Failed, Stopped) and their records, as a task
 * queue's clean does; `--state` narrows to one finished state, `--older-than` to jobs that ended
 * at least that long ago. Running jobs are never touched. Prints the jobs removed.
 */
export async function clean(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(argv, {
    ...SESSION_OPTION,
    state: { type: 'string' },
    'older-than': { type: 'string' },
    json: { type: 'boolean' },
  });
  if (values.help) return helpFor('clean', io);
  if (positionals.length > 0)
    throw usageError(`unexpected argument ${positionals[0]}; use rjob remove for given jobs`);
  const state = stateFlag(str(values.state));
  if (state !== undefined && !isTerminal(state)) {
    throw usageError(`clean removes finished jobs: --state is Completed, Failed or Stopped, not ${state}`);
  }
  const olderThan = str(values['older-than']);
  const olderThanMs = olderThan === undefined ? undefined : durationMs(olderThan, '--older-than');
  return withContext(io, str(values['state-dir']), async (ctx) =>
    onJobSession(ctx, str(values.session), async (session) => {
      const now = Date.now();
      const jobs = (await session.jobs.get({})).filter(
        (job) =>
          isTerminal(job.state) &&
          (state === undefined || job.state === state) &&
          (olderThanMs === undefined || (job.endTimeMs !== undefined && now - job.endTimeMs >= olderThanMs)),
      );
      if (jobs.length > 0) await session.jobs.remove(jobs.map((job) => job.id));
      if (values.json) io.stdout.write(`${JSON.stringify(jobs.map(jobJson), jsonReplacer)}\n`);
      else if (jobs.length > 0) io.stdout.write(jobTable(jobs, terminalWidth(io)));
      return ExitCode.Ok;
    }),
  );
}

/**
 * `rjob restart`: runs finished jobs again, each as a new job with the same command, working
 * directory, environment, name and label (the agent keeps the definition); `--all-failed` takes
 * every Failed job. Prints the new jobs.
 */
export async function restart(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(argv, {
    ...SESSION_OPTION,
    'all-failed': { type: 'boolean' },
    json: { type: 'boolean' },
  });
  if (values.help) return helpFor('restart', io);
  const allFailed = bool(values['all-failed']);
  if (!allFailed) requireSelectors(positionals, 'restart');
  return withContext(io, str(values['state-dir']), async (ctx) =>
    onJobSession(ctx, str(values.session), async (session) => {
      const found = await findJobs(session, positionals);
      const jobs = allFailed ? found.filter((job) => job.state === 'Failed') : found;
      const running = jobs.find((job) => !isTerminal(job.state));
      if (running) {
        throw new CliError(
          ExitCode.Refused,
          ErrorCode.JobRunning,
          `job ${running.id} (${running.name}) is ${running.state}; restart runs finished jobs again`,
        );
      }
      const started = jobs.length > 0 ? await session.jobs.restart(jobs.map((job) => job.id)) : [];
      if (values.json) io.stdout.write(`${JSON.stringify(started.map(jobJson), jsonReplacer)}\n`);
      else if (started.length > 0) io.stdout.write(jobTable(started, terminalWidth(io)));
      return ExitCode.Ok;
    }),
  );
}

/** `rjob pause` / `rjob resume`: SIGSTOP / SIGCONT to the jobs' process groups. Prints the jobs. */
export async function pause(argv: readonly string[], io: CliIo): Promise<number> {
  return suspendOrResume('pause', argv, io);
}

export async function resume(argv: readonly string[], io: CliIo): Promise<number> {
  return suspendOrResume('resume', argv, io);
}

async function suspendOrResume(
  verb: 'pause' | 'resume',
  argv: readonly string[],
  io: CliIo,
): Promise<number> {
  const { values, positionals } = parse(argv, { ...SESSION_OPTION, json: { type: 'boolean' } });
  if (values.help) return helpFor(verb, io);
  requireSelectors(positionals, verb);
  return withContext(io, str(values['state-dir']), async (ctx) =>
    onJobSession(ctx, str(values.session), async (session) => {
      const ids = (await findJobs(session, positionals)).map((job) => job.id);
      const jobs = verb === 'pause' ? await session.jobs.suspend(ids) : await session.jobs.resume(ids);
      if (values.json) io.stdout.write(`${JSON.stringify(jobs.map(jobJson), jsonReplacer)}\n`);
      else io.stdout.write(jobTable(jobs, terminalWidth(io)));
      return ExitCode.Ok;
    }),
  );
}
