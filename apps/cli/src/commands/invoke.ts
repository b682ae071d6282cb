/**
 * `rjob invoke` (Invoke-Command): the same work on every host, output prefixed per host, a summary
 * of succeeded / failed / unreachable hosts, and an exit code telling them apart.
 */
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  defineTransport,
  type FanOutResult,
  invokeMany,
  JobManager,
  type RemoteRecord,
  RjobError,
} from '@rjob/core';
import { bool, durationMs, parse, positiveInt, str, strs } from '../args.js';
import type { CliContext } from '../context.js';
import { isUnreachableCode, oneLine } from '../errors.js';
import { dataText, jobJson, jobTable, jsonReplacer, printRecord } from '../format.js';
import { helpFor } from '../help.js';
import { CliError, type CliIo, ExitCode, type ExitCodeValue, usageError } from '../io.js';
import { noAgentButExec, remoteSettings } from '../agent-transports.js';
import { onJobSession, withContext } from '../run-command.js';
import { expandHosts, selectHosts } from '../inventory.js';
import { workRequest } from './jobs.js';
import { invokeDisconnected } from './invoke-disconnected.js';
import { ErrorCode, SessionErrorCode } from '@rjob/core';

export async function invoke(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals, rest } = parse(argv, {
    computer: { type: 'string', short: 'c', multiple: true },
    session: { type: 'string', short: 's' },
    throttle: { type: 'string' },
    'as-job': { type: 'boolean' },
    name: { type: 'string', short: 'n' },
    type: { type: 'string', short: 't' },
    definition: { type: 'string', short: 'd' },
    eval: { type: 'string', short: 'e' },
    'no-prefix': { type: 'boolean' },
    json: { type: 'boolean' },
    bytes: { type: 'boolean' },
    disconnected: { type: 'boolean' },
    limit: { type: 'string', short: 'l' },
    'out-dir': { type: 'string' },
    timeout: { type: 'string' },
    'connect-timeout': { type: 'string' },
  });
  if (values.help) return helpFor('invoke', io);
  const computers = strs(values.computer);
  const sessionName = str(values.session);
  if ((computers.length === 0) === (sessionName === undefined)) {
    throw usageError('invoke needs either -c HOST[,HOST...] or -s SESSION');
  }
  const throttle = str(values.throttle);
  const throttleLimit = throttle === undefined ? undefined : positiveInt(throttle, '--throttle');
  const limit = str(values.limit);
  const outDir = str(values['out-dir']);
  const timeout = str(values.timeout);
  const timeoutMs = timeout === undefined ? undefined : positiveDuration(timeout, '--timeout');
  const connectTimeout = str(values['connect-timeout']);
  const connectTimeoutMs =
    connectTimeout === undefined ? undefined : positiveDuration(connectTimeout, '--connect-timeout');
  if (sessionName !== undefined && (limit !== undefined || connectTimeoutMs !== undefined)) {
    throw usageError('--limit and --connect-timeout are for hosts given with -c, not a session (-s)');
  }
  if (outDir !== undefined && (values['as-job'] || values.disconnected || sessionName !== undefined)) {
    throw usageError('--out-dir is for a fan-out with -c; not with --as-job, --disconnected or -s');
  }
  const flags = {
    type: str(values.type),
    definition: str(values.definition),
    eval: str(values.eval),
    file: undefined,
    positionals,
    rest,
    bytes: bool(values.bytes),
  };
  if (values.disconnected && (values['as-job'] || sessionName !== undefined || computers.length === 0)) {
    throw usageError('--disconnected needs -c HOST[,HOST...] and cannot be combined with --as-job or -s');
  }
  if (values.bytes && values['as-job']) {
    throw usageError(
      '--bytes cannot be combined with --as-job; start the job with --bytes in a session (-s) instead',
    );
  }
  // Remote hosts run the work in their own context: no local cwd is sent.
  const base = workRequest(flags, io, false);
  // --timeout travels with the work: the remote agent ends the command (its process group) then.
  const work =
    timeoutMs === undefined
      ? base
      : { ...base, definition: { ...(base.definition as Record<string, unknown>), timeoutMs } };
  const name = str(values.name);
  if (name !== undefined && !values['as-job']) throw usageError('--name needs --as-job');
  return withContext(io, str(values['state-dir']), async (ctx) => {
    if (sessionName !== undefined) {
      if (values['as-job']) {
        // Invoke-Command -Session -AsJob: a local RemoteJob whose child runs in the session the
        // local agent holds; it shows Disconnected while the session is (`start -s` keeps results remote).
        const stored = await ctx.storedSession(sessionName);
        const command = commandText(argv) || (flags.eval ?? '');
        const info = await onJobSession(ctx, undefined, (local) =>
          local.jobs.startGroup({
            ...(name ? { name } : {}),
            type: 'RemoteJob',
            command,
            location: stored.target,
            children: [
              {
                type: 'RemoteJob',
                location: stored.target,
                command,
                definition: {
                  target: stored.target,
                  session: ctx.relayRequest(stored),
                  work,
                  command,
                },
              },
            ],
          }),
        );
        io.stdout.write(values.json ? `${JSON.stringify(jobJson(info), jsonReplacer)}\n` : jobTable([info]));
        return ExitCode.Ok;
      }
      const session = await ctx.namedSession(sessionName);
      const invocation = session.invoke(work, { onRecord: (record) => printRecord(io, record) });
      const info = await invocation.result;
      if (info.state === 'Failed') {
        io.stderr.write(`rjob: ${session.computerName}: ${dataText(info.reason)}\n`);
        return ExitCode.JobFailed;
      }
      return ExitCode.Ok;
    }
    const expanded = await expandHosts(computers, io);
    const hosts =
      limit === undefined ? expanded.hosts : selectHosts(expanded.hosts, limit, expanded.inventory);
    if (hosts.length === 0)
      throw usageError(`--limit ${limit} selects none of the ${expanded.hosts.length} hosts`);
    if (connectTimeoutMs !== undefined) ctx.targets.connectTimeoutMs = connectTimeoutMs;
    if (values.disconnected) return invokeDisconnected(ctx, io, hosts, work, throttleLimit);
    if (values['as-job']) {
      return asJob(ctx, io, hosts, work, {
        name,
        json: bool(values.json),
        throttleLimit,
        connectTimeoutMs,
        command: commandText(argv) || (flags.eval ?? ''),
      });
    }
    return fanOut(ctx, io, hosts, work, {
      throttleLimit,
      prefixLines: !values['no-prefix'],
      outDir: outDir === undefined ? undefined : resolve(io.cwd, outDir),
      connectTimeoutMs,
    });
  });
}

interface FanOutFlags {
  throttleLimit: number | undefined;
  prefixLines: boolean;
  /** `--out-dir`: each host's lines go to DIR/HOST.out and DIR/HOST.err instead of the terminal. */
  outDir: string | undefined;
  connectTimeoutMs: number | undefined;
}

async function fanOut(
  ctx: CliContext,
  io: CliIo,
  hosts: string[],
  work: ReturnType<typeof workRequest>,
  flags: FanOutFlags,
): Promise<number> {
  const { prefixLines, outDir } = flags;
  // One transport for every kind of host; each target string picks its own underneath.
  const transport = defineTransport<string>({
    name: 'rjob',
    async connect(spec, options) {
      const resolved = await ctx.targets.resolve(spec);
      return resolved.transport.connect(resolved.target, options);
    },
  });
  const showProgress = io.stderr.isTTY === true && hosts.length > 1;
  // Hosts whose work has ended (or that could not be reached): what the progress line counts.
  let done = 0;
  const progress = (): void => {
    if (showProgress) io.stderr.write(`\r\u001b[K${done}/${hosts.length} hosts done`);
  };
  const clearProgress = (): void => {
    if (showProgress) io.stderr.write('\r\u001b[K');
  };
  const files = outDir === undefined ? undefined : new HostFiles(outDir);
  const print = (record: RemoteRecord): void => {
    if (files) {
      files.write(record);
      return;
    }
    // A failed host's reason is reported once, by the summary.
    if (record.reason) return;
    clearProgress();
    printRecord(io, record, prefixLines ? `[${record.computerName}] ` : '');
    progress();
  };
  progress();
  // Ctrl-C (or SIGTERM) of this command stops the remote commands (their sessions are closed),
  // then the summary says which hosts were interrupted. A second Ctrl-C ends the CLI at once.
  const interrupt = new AbortController();
  const offInterrupt = onInterrupt(io, () => interrupt.abort());
  const invocation = invokeMany(undefined, hosts, work, {
    signal: interrupt.signal,
    transport,
    computerName: (host) => (host === 'local' ? 'localhost' : host),
    onRecord: print,
    onResult: (result) => {
      done++;
      files?.finish(result);
      clearProgress();
      progress();
    },
    ...(flags.throttleLimit === undefined ? {} : { throttleLimit: flags.throttleLimit }),
    ...(flags.connectTimeoutMs === undefined
      ? {}
      : { sessionOptions: { handshakeTimeoutMs: flags.connectTimeoutMs } }),
  });
  let results = await invocation.results;
  // Hosts without node (the agent could be neither found nor deployed) still run a shell command,
  // by plain SSH exec, as `ssh HOST CMD` would.
  if (!interrupt.signal.aborted) {
    results = await agentlessFallback(ctx, io, results, work, print, interrupt.signal);
  }
  offInterrupt();
  clearProgress();
  const code = summarize(io, results, hosts.length === 1);
  return interrupt.signal.aborted ? ExitCode.Interrupted : code;
}

/**
 * `invoke -c HOST -- CMD` on hosts without node: the same command by plain SSH exec, one notice
 * line per host on stderr, output prefixed as any host's. Work that is not a bare shell command
 * (JavaScript, `--bytes`) keeps its ERR_SSH_NO_AGENT.
 */
async function agentlessFallback(
  ctx: CliContext,
  io: CliIo,
  results: FanOutResult[],
  work: ReturnType<typeof workRequest>,
  print: (record: RemoteRecord) => void,
  signal: AbortSignal,
): Promise<FanOutResult[]> {
  const hosts = results.filter((result) => noAgentButExec(result.error)).map((r) => r.computerName);
  if (hosts.length === 0) return results;
  const { plainShellCommand } = await import('@rjob/transport-ssh');
  const command = plainShellCommand(work);
  if (command === undefined) return results;
  const type = await ctx.targets.sshExecJobType();
  const jobs = new JobManager({ types: [type] });
  const stop = (): void => void jobs.close().catch(() => {});
  signal.addEventListener('abort', stop, { once: true });
  try {
    const redone = new Map<string, FanOutResult>();
    await Promise.all(
      hosts.map(async (host) => {
        io.stderr.write(`rjob: ${host}: no node there, so no agent; running the command by plain SSH exec\n`);
        const resolved = await ctx.targets.resolve(host);
        const job = await jobs.start(type, { target: resolved.target, command }, { name: host });
        for await (const record of jobs.receiveStream(job)) {
          print({ ...record, computerName: host, location: host } as RemoteRecord);
        }
        redone.set(host, {
          computerName: host,
          // What the summary reads: the state, and the exit code's reason when it failed.
          info: { ...job.toJSON(), state: job.state, reason: job.reason, computerName: host } as NonNullable<
            FanOutResult['info']
          >,
        });
      }),
    );
    return results.map((result) => redone.get(result.computerName) ?? result);
  } finally {
    signal.removeEventListener('abort', stop);
    await jobs.close().catch(() => {});
  }
}

/** A duration flag that must be more than zero. */
function positiveDuration(value: string, flag: string): number {
  const ms = durationMs(value, flag);
  if (ms <= 0) throw usageError(`${flag} must be more than zero, not ${value}`);
  return ms;
}

/** A host as a file name: path separators and other awkward characters become `_`. */
export function hostFileName(host: string): string {
  const safe = host.replace(/[^A-Za-z0-9._@:+=-]/g, '_');
  return safe === '.' || safe === '..' ? safe.replace(/\./g, '_') : safe;
}

/**
 * `--out-dir DIR` (as pssh -o/-e): each host's output and information records go to DIR/HOST.out,
 * everything else (error, warning, verbose, debug, and why the host failed) to DIR/HOST.err. A
 * host's files are opened on its first record and closed when it is done, so a fan-out to many
 * hosts holds at most one pair per running host. Every host gets both files, empty or not.
 */
class HostFiles {
  readonly #dir: string;
  readonly #open = new Map<string, { out: number; err: number }>();

  constructor(dir: string) {
    this.#dir = dir;
    try {
      mkdirSync(dir, { recursive: true });
    } catch (error) {
      throw new CliError(
        ExitCode.Usage,
        ErrorCode.InvalidArgument,
        `cannot create --out-dir ${dir}: ${(error as Error).message}`,
      );
    }
  }

  #fds(host: string): { out: number; err: number } {
    let fds = this.#open.get(host);
    if (!fds) {
      const base = join(this.#dir, hostFileName(host));
      fds = { out: openSync(`${base}.out`, 'w'), err: openSync(`${base}.err`, 'w') };
      this.#open.set(host, fds);
    }
    return fds;
  }

  write(record: RemoteRecord): void {
    const fds = this.#fds(record.computerName);
    const sink = (fd: number) => ({
      isTTY: false,
      write: (chunk: string | Uint8Array) => {
        if (typeof chunk === 'string') writeSync(fd, chunk);
        else writeSync(fd, chunk);
        return true;
      },
    });
    const fileIo = { ...this.#ioBase, stdout: sink(fds.out), stderr: sink(fds.err) } as unknown as CliIo;
    printRecord(fileIo, record);
  }

  readonly #ioBase = { env: { NO_COLOR: '1' } };

  finish(result: FanOutResult): void {
    const fds = this.#fds(result.computerName);
    this.#open.delete(result.computerName);
    closeSync(fds.out);
    closeSync(fds.err);
  }
}

/** Calls `stop` on the first SIGINT or SIGTERM of this process (not for commands run in-process). */
function onInterrupt(io: CliIo, stop: () => void): () => void {
  if (io.stdout !== process.stdout) return () => {};
  const handler = (): void => {
    off();
    stop();
  };
  const off = (): void => {
    process.off('SIGINT', handler);
    process.off('SIGTERM', handler);
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return off;
}

type Outcome = 'succeeded' | 'failed' | 'unreachable' | 'interrupted';

function classify(result: FanOutResult): Outcome {
  const error = result.error;
  if (error) {
    if (!RjobError.is(error)) return 'unreachable';
    if (error.code === SessionErrorCode.Interrupted) return 'interrupted';
    return isUnreachableCode(error.code) ? 'unreachable' : 'failed';
  }
  return result.info?.state === 'Completed' ? 'succeeded' : 'failed';
}

/** Prints why each host did not succeed, then the summary; the exit code ranks unreachable first. */
function summarize(io: CliIo, results: readonly FanOutResult[], single: boolean): ExitCodeValue {
  const counts: Record<Outcome, number> = { succeeded: 0, failed: 0, unreachable: 0, interrupted: 0 };
  for (const result of results) {
    const outcome = classify(result);
    counts[outcome]++;
    if (outcome === 'succeeded') continue;
    const reason = result.error ?? result.info?.reason;
    const code = RjobError.is(reason) ? reason.code : ErrorCode.JobFailed;
    const message = oneLine(
      reason ? dataText(reason).replace(/ \(ERR_[A-Z_]+\)$/, '') : String(result.info?.state),
    );
    // One host: the classic one-line error; several: a line each, the summary says how many.
    io.stderr.write(
      single
        ? `rjob: ${result.computerName}: ${message} (${code})\n`
        : `[${result.computerName}] ${outcome.toUpperCase()}: ${message} (${code})\n`,
    );
  }
  if (!single) {
    io.stderr.write(
      `rjob: ${results.length} hosts: ${counts.succeeded} succeeded, ${counts.failed} failed, ${counts.unreachable} unreachable${counts.interrupted > 0 ? `, ${counts.interrupted} interrupted` : ''}\n`,
    );
  }
  if (counts.unreachable > 0) return ExitCode.Unreachable;
  if (counts.failed > 0) return ExitCode.JobFailed;
  return ExitCode.Ok;
}

/**
 * `--as-job`: the fan-out must outlive this process, so the local agent runs it: one request
 * (`job.startGroup`) makes a parent job (Type RemoteJob, Location the hosts) with one RemoteJob
 * child per host (Location that host), and the agent reaches each host itself through the
 * transports this CLI gave it (see agent-transports.ts), at most `--throttle` at once. Records keep
 * their values (a thread job's objects and Dates stay objects and Dates); a host that fails fails
 * its child with its own coded reason (ERR_SSH_CONNECT_REFUSED, ERR_JOB_EXIT_CODE with the exit
 * code, ...), and the parent with ERR_CHILD_JOB_FAILED. `rjob stop` stops the remote commands.
 */
async function asJob(
  ctx: CliContext,
  io: CliIo,
  hosts: string[],
  work: ReturnType<typeof workRequest>,
  options: {
    name: string | undefined;
    json: boolean;
    throttleLimit: number | undefined;
    connectTimeoutMs: number | undefined;
    command: string;
  },
): Promise<number> {
  const { command } = options;
  const settings = remoteSettings(io);
  const info = await onJobSession(ctx, undefined, (session) =>
    session.jobs.startGroup({
      ...(options.name ? { name: options.name } : {}),
      type: 'RemoteJob',
      command,
      // The Location column of the parent; a long fleet is shortened (the children name each host).
      location:
        hosts.length <= 8 ? hosts.join(',') : `${hosts.slice(0, 3).join(',')},… (${hosts.length} hosts)`,
      ...(options.throttleLimit === undefined ? {} : { throttleLimit: options.throttleLimit }),
      children: hosts.map((host) => {
        const computerName = host === 'local' ? 'localhost' : host;
        return {
          type: 'RemoteJob',
          name: host,
          location: computerName,
          command,
          definition: {
            target: host,
            computerName,
            work,
            command,
            ...settings,
            ...(options.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: options.connectTimeoutMs }),
          },
        };
      }),
    }),
  );
  io.stdout.write(options.json ? `${JSON.stringify(jobJson(info), jsonReplacer)}\n` : jobTable([info]));
  return ExitCode.Ok;
}

function commandText(argv: readonly string[]): string {
  const end = argv.indexOf('--');
  return end >= 0 ? argv.slice(end + 1).join(' ') : '';
}
