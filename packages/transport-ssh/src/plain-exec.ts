/**
 * The fallback for hosts with neither the rjob agent nor node: shell commands run by plain SSH
 * exec, as a local job type. What it keeps of a process job: output and error lines streamed as
 * records (with flow control through the SSH channel window), exit code → Completed or Failed
 * (ERR_JOB_EXIT_CODE / ERR_JOB_SIGNAL, as local process jobs), and stop by process group.
 *
 * What it cannot do without the agent: sessions, disconnect/reconnect, results kept on the remote
 * host (the job and its output live here, and die with the SSH connection).
 *
 * Stop by process group: the command runs under a small wrapper,
 * `setsid -w /bin/sh -c 'echo "rjob-pgid $$" >&2; exec /bin/sh -c "$1"'`, so it leads a new
 * process group whose id is reported on the first stderr line. Stopping sends TERM to that group
 * through a second exec on the same connection, then KILL after a grace period: everything the
 * command started goes, not only the shell (sshd itself signals nothing when a channel closes).
 */
import { StringDecoder } from 'node:string_decoder';
import {
  DEFAULT_THROTTLE_LIMIT,
  defineJobType,
  describeWorkRequest,
  ErrorCode,
  type Job,
  type JobContext,
  type JobManager,
  type JobOutcome,
  type JobRun,
  type JobType,
  type RemoteJobDefinition,
  RjobError,
  remoteJobType,
  type SessionOptions,
  type Transport,
  type WorkRequest,
} from '@rjob/core';
import type { Client, ClientChannel } from 'ssh2';
import { createAuthShared } from './auth.js';
import { shellQuote } from './deploy.js';
import { SshErrorCode } from './errors.js';
import { resolveSshConfig, type SshHostConfig } from './ssh-config.js';
import {
  openConnection,
  type SshTransportOptions,
  type SshTransportTarget,
  sshTransport,
} from './ssh-transport.js';

export const SSH_EXEC_JOB_TYPE_NAME = 'SshExecJob';
/** Between TERM and KILL to the remote process group, unless told otherwise. */
export const DEFAULT_SSH_EXEC_STOP_GRACE_MS = 2_000;
/** A longer line is emitted in pieces: output without newlines must not grow memory unbounded. */
const MAX_LINE_CHARS = 1024 * 1024;
const PGID_LINE = /^rjob-pgid (\d+)$/;

export interface SshExecDefinition {
  /** The host, as `sshTransport` takes it. */
  target: SshTransportTarget;
  /** A shell command, run by `/bin/sh -c` as the remote user. */
  command: string;
}

export interface SshExecJobTypeOptions extends SshTransportOptions {
  /** Between TERM and KILL on stop. Default 2 000 ms. */
  stopGraceMs?: number;
}

/** The remote command line that runs `command` as the leader of a new process group. */
export function plainExecCommand(command: string): string {
  const inner = `echo "rjob-pgid $$" >&2; exec /bin/sh -c "$1"`;
  return `exec setsid -w /bin/sh -c ${shellQuote(inner)} rjob-exec ${shellQuote(command)}`;
}

/** Splits decoded text into lines (a trailing `\r` dropped), flushing the rest at the end. */
class Lines {
  #partial = '';
  readonly #decoder = new StringDecoder('utf8');
  constructor(readonly onLine: (line: string) => void) {}
  write(chunk: Buffer): void {
    const parts = (this.#partial + this.#decoder.write(chunk)).split('\n');
    this.#partial = parts.pop() ?? '';
    for (const part of parts) this.#emit(part);
    while (this.#partial.length > MAX_LINE_CHARS) {
      this.onLine(this.#partial.slice(0, MAX_LINE_CHARS));
      this.#partial = this.#partial.slice(MAX_LINE_CHARS);
    }
  }
  end(): void {
    const rest = this.#partial + this.#decoder.end();
    this.#partial = '';
    if (rest !== '') this.#emit(rest);
  }
  #emit(line: string): void {
    this.onLine(line.endsWith('\r') ? line.slice(0, -1) : line);
  }
}

function execChannel(client: Client, command: string, host: SshHostConfig): Promise<ClientChannel> {
  return new Promise((resolve, reject) => {
    const fail = (error: unknown): void =>
      reject(
        new RjobError(
          SshErrorCode.ChannelFailed,
          `ssh: ${host.hostName}:${host.port}: could not open a channel: ${String((error as Error)?.message ?? error)}`,
          { cause: error, details: { host: host.hostName, port: host.port } },
        ),
      );
    try {
      client.exec(command, (error, channel) => (error ? fail(error) : resolve(channel)));
    } catch (error) {
      fail(error);
    }
  });
}

/**
 * A job type that runs shell commands over plain SSH exec, for hosts without the agent. Use it
 * with a local JobManager (`manager.start({ type, definition: { target, command } })`), or as the
 * children of `manager.startGroup` for a fan-out over such hosts. One SSH connection per job.
 */
export function sshExecJobType(options: SshExecJobTypeOptions = {}): JobType<SshExecDefinition> {
  // One question at a time and one unlocked key for all of this type's connections, as for a
  // transport's (see sshTransport).
  options = { ...options, authShared: options.authShared ?? createAuthShared() };
  const stopGraceMs = options.stopGraceMs ?? DEFAULT_SSH_EXEC_STOP_GRACE_MS;
  return defineJobType<SshExecDefinition>({
    name: SSH_EXEC_JOB_TYPE_NAME,
    aliases: ['ssh-exec'],
    describe: (definition) => definition.command,
    async start(definition, context) {
      if (typeof definition?.command !== 'string' || definition.command === '') {
        throw new RjobError(ErrorCode.InvalidArgument, 'An SSH exec job needs a non-empty `command` string.');
      }
      const host = await resolveSshConfig(definition.target, options.sshConfig ?? {});
      const { client } = await openConnection(host, options);
      let channel: ClientChannel;
      try {
        channel = await execChannel(client, plainExecCommand(definition.command), host);
      } catch (error) {
        client.end();
        throw error;
      }
      return runPlainExec(client, channel, host, context, stopGraceMs);
    },
  });
}

function runPlainExec(
  client: Client,
  channel: ClientChannel,
  host: SshHostConfig,
  context: JobContext,
  stopGraceMs: number,
): JobRun {
  context.running();
  let pgid: number | undefined;
  let onPgid: ((pgid: number) => void) | undefined;
  let stopping = false;
  let exitCode: number | null = null;
  let exitSignal: string | undefined;
  let sawFirstErrLine = false;

  const out = new Lines((line) => context.emit('output', line, 64 + line.length));
  const err = new Lines((line) => {
    if (!sawFirstErrLine) {
      sawFirstErrLine = true;
      const match = PGID_LINE.exec(line);
      if (match) {
        pgid = Number(match[1]);
        onPgid?.(pgid);
        return;
      }
    }
    context.emit('error', line, 64 + line.length);
  });
  channel.on('data', (chunk: Buffer) => out.write(chunk));
  channel.stderr.on('data', (chunk: Buffer) => err.write(chunk));
  channel.on('exit', (code: number | null, signal?: string) => {
    exitCode = code;
    exitSignal = signal;
  });
  channel.on('error', () => {});
  // Nothing to send: the command gets EOF on stdin, as a process job without input does.
  channel.end();
  channel.once('close', () => {
    out.end();
    err.end();
    client.end();
    context.finish(outcome());
  });

  const outcome = (): JobOutcome => {
    if (stopping) return { state: 'Stopped' };
    if (exitCode === 0) return { state: 'Completed' };
    if (exitCode === null && exitSignal === undefined) {
      // The channel closed without an exit status: the connection dropped, and nothing here
      // knows whether the remote command is still running.
      return {
        state: 'Failed',
        reason: new RjobError(
          SshErrorCode.ConnectFailed,
          `ssh: ${host.alias}: the connection closed before the command ended`,
          { details: { host: host.hostName, port: host.port } },
        ),
      };
    }
    if (exitCode !== null) {
      return {
        state: 'Failed',
        reason: new RjobError(ErrorCode.JobExitCode, `Remote command exited with code ${exitCode}`, {
          exitCode,
        }),
      };
    }
    return {
      state: 'Failed',
      reason: new RjobError(ErrorCode.JobSignal, `Remote command was killed by signal ${exitSignal}`, {
        signal: exitSignal ?? 'unknown',
      }),
    };
  };

  /** Signals the remote group through a second channel on the same connection. */
  const signalGroup = (name: 'TERM' | 'KILL', group: number): void => {
    execChannel(client, `kill -${name} -${group} 2>/dev/null`, host).then(
      (kill) => {
        kill.on('error', () => {});
        kill.resume();
        kill.stderr.resume();
        kill.end();
      },
      () => {
        // The connection is gone; so is the command's channel, which ends the job.
      },
    );
  };

  return {
    stop() {
      stopping = true;
      const kill = (group: number): void => {
        signalGroup('TERM', group);
        const timer = setTimeout(() => signalGroup('KILL', group), stopGraceMs);
        timer.unref();
        channel.once('close', () => clearTimeout(timer));
      };
      if (pgid !== undefined) kill(pgid);
      else onPgid = kill;
    },
    pause: () => channel.pause(),
    resume: () => channel.resume(),
  };
}

/** The shell command of a work request that plain exec can run the same way, if it is one. */
export function plainShellCommand(work: WorkRequest): string | undefined {
  if (work.type !== undefined && !['process', 'BackgroundJob'].includes(work.type)) return undefined;
  const definition = work.definition;
  if (typeof definition === 'string') return definition;
  if (typeof definition !== 'object' || definition === null) return undefined;
  const { command, ...rest } = definition as Record<string, unknown>;
  // cwd, env, input, a timeout...: plain exec would silently ignore them, so it does not take over.
  return typeof command === 'string' && Object.keys(rest).length === 0 ? command : undefined;
}

function noAgentForPlainExec(error: unknown): boolean {
  for (let e = error; RjobError.is(e) || e instanceof Error; e = (e as Error).cause) {
    if (RjobError.is(e) && e.code === SshErrorCode.NoAgent && e.details?.plainExec === true) return true;
  }
  return false;
}

export interface SshRemoteOrExecDefinition {
  target: SshTransportTarget;
  work: WorkRequest;
  sessionOptions?: SessionOptions;
}

/**
 * A fan-out child for mixed fleets: a RemoteJob through `transport` (the agent, installed or
 * deployed), and, on a host with neither the agent nor node, the same shell command by plain
 * exec. Work that is not a bare shell command still fails there with ERR_SSH_NO_AGENT.
 */
export function sshRemoteOrExecJobType(
  transport: Transport<SshTransportTarget>,
  options: SshExecJobTypeOptions = {},
): JobType<SshRemoteOrExecDefinition> {
  const remote = remoteJobType();
  const plain = sshExecJobType(options);
  return defineJobType<SshRemoteOrExecDefinition>({
    name: 'SshRemoteOrExecJob',
    describe: (definition) => describeWorkRequest(definition.work),
    async start(definition, context) {
      const remoteDefinition: RemoteJobDefinition = {
        connect: { transport, target: definition.target, options: definition.sessionOptions ?? {} },
        work: definition.work,
      };
      try {
        return await remote.start(remoteDefinition, context);
      } catch (error) {
        const command = plainShellCommand(definition.work);
        if (command === undefined || !noAgentForPlainExec(error)) throw error;
        return plain.start({ target: definition.target, command }, context);
      }
    },
  });
}

export interface InvokeManySshOptions extends SshExecJobTypeOptions {
  /** The parent job's name. Default `Job<id>`. */
  name?: string;
  /** Hosts worked on at once. Default 32, as `invokeMany`. */
  throttleLimit?: number;
  sessionOptions?: SessionOptions;
}

/**
 * `invokeMany(..., { asJob: true })` over SSH for fleets where some hosts lack the agent and
 * node: a parent job with one child per host (Location = the target), each a RemoteJob or, for
 * a shell command on such a host, a plain exec.
 */
export function invokeManySsh(
  manager: JobManager,
  targets: readonly string[],
  work: WorkRequest,
  options: InvokeManySshOptions = {},
): Job {
  // The session transport and the plain-exec fallback ask through one queue.
  const shared = { ...options, authShared: options.authShared ?? createAuthShared() };
  const type = sshRemoteOrExecJobType(sshTransport(shared), shared);
  return manager.startGroup({
    ...(options.name === undefined ? {} : { name: options.name }),
    throttleLimit: options.throttleLimit ?? DEFAULT_THROTTLE_LIMIT,
    children: targets.map((target) => ({
      type,
      definition: {
        target,
        work,
        sessionOptions: { ...options.sessionOptions, computerName: target },
      } satisfies SshRemoteOrExecDefinition,
      location: target,
    })),
  });
}
