/**
 * `rjob session …` (New-PSSession, Get-PSSession, Connect/Disconnect/Receive/Remove-PSSession).
 * A named session's id and resume secret are kept in the state directory (0600), so any later
 * invocation, or `rjob enter`, can take it over; between invocations it is Disconnected on its
 * agent and its jobs run on.
 */
import { isTerminal, openSession, type RemoteJobInfo, type Session, type SessionInfo } from '@rjob/core';
import { bool, parse, str, strs } from '../args.js';
import type { CliContext } from '../context.js';
import {
  jobJson,
  jobTable,
  jsonReplacer,
  formatRecord,
  recordJson,
  type SessionRow,
  sessionTable,
} from '../format.js';
import { streamRecords } from './receive.js';
import { helpFor } from '../help.js';
import { CliError, type CliIo, ExitCode, usageError } from '../io.js';
import { remoteSettings } from '../agent-transports.js';
import { onJobSession, withContext } from '../run-command.js';
import type { StoredSession } from '../state.js';
import { expandComputers } from '../targets.js';
import { ProtocolErrorCode } from '@rjob/core';

export async function session(argv: readonly string[], io: CliIo): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'new':
      return newSession(rest, io);
    case 'list':
    case 'ls':
      return listSessions(rest, io);
    case 'connect':
      return connectCmd(rest, io);
    case 'disconnect':
      return disconnectCmd(rest, io);
    case 'receive':
      return receiveCmd(rest, io);
    case 'remove':
    case 'rm':
      return removeCmd(rest, io);
    case undefined:
    case '--help':
    case '-h':
    case 'help':
      return helpFor('session', io);
    default:
      throw usageError(`unknown session command ${sub}`);
  }
}

function transportName(target: string): string {
  if (target === 'localhost' || target === 'local') return 'unix';
  return /^wss?:\/\//i.test(target) ? 'ws' : 'ssh';
}

async function newSession(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(argv, { name: { type: 'string', short: 'n' } });
  if (values.help) return helpFor('session', io);
  if (positionals.length !== 1)
    throw usageError('session new needs one host (localhost, an ssh target or a ws URL)');
  const target = positionals[0]!;
  return withContext(io, str(values['state-dir']), async (ctx) => {
    const wanted = str(values.name);
    if (wanted !== undefined && (await ctx.store.find(wanted))) {
      throw usageError(`a session named ${wanted} exists already`);
    }
    // The local agent opens the session and holds it: later `-s` verbs reach it over that connection.
    const host = await ctx.localSession();
    const { env, cwd } = remoteSettings(io);
    const opened = await host.request('hosted.open', {
      target,
      name: wanted ?? target,
      env,
      cwd,
      ...(ctx.targets.connectTimeoutMs === undefined
        ? {}
        : { connectTimeoutMs: ctx.targets.connectTimeoutMs }),
    });
    // The name is settled under the store's lock, once the session exists: parallel `session new`
    // commands never pick the same one, nor forget each other's sessions.
    const name = await ctx.store.add(
      { target, sessionId: opened.sessionId, resumeSecret: opened.resumeSecret, createdAtMs: Date.now() },
      wanted,
    );
    const stored = {
      target,
      sessionId: opened.sessionId,
      resumeSecret: opened.resumeSecret,
      name: name ?? '',
    };
    if (name === undefined) {
      await host.request('hosted.close', ctx.relayRequest({ ...stored, createdAtMs: 0 })).catch(() => {});
      throw usageError(`a session named ${wanted} exists already`);
    }
    let info = opened.info;
    if (name !== opened.info.name) {
      const relay = await ctx.namedSession(name);
      info = await relay.request('session.configure', { name });
    }
    const index = (await ctx.store.list()).findIndex((entry) => entry.name === name) + 1;
    io.stdout.write(sessionTable([sessionRow(index, { name, target }, info)]));
    return ExitCode.Ok;
  });
}

/** A `session list` row: a stored session with what its agent says of it (if it answered). */
export function sessionRow(
  id: number,
  stored: Pick<StoredSession, 'name' | 'target'>,
  info: SessionInfo | undefined,
): SessionRow {
  return {
    id,
    name: stored.name,
    transport: transportName(stored.target),
    computerName: stored.target,
    remoteHost: info?.computerName ?? '',
    state: info?.state ?? 'Unknown',
    availability: info?.availability ?? 'Unknown',
  };
}

/**
 * Asks each agent which sessions it holds for us, through a short-lived session of its own (closed
 * again), so listing never takes a session over from a client that is using it.
 */
async function agentSessions(ctx: CliContext, target: string): Promise<SessionInfo[]> {
  return withProbe(ctx, target, async (probe) => {
    const all = await probe.request('session.list');
    return all.filter((info) => info.sessionId !== probe.sessionId);
  });
}

/** Runs `fn` on a short-lived session of its own on `target`'s agent, closed again. */
async function withProbe<T>(
  ctx: CliContext,
  target: string,
  fn: (probe: Session<unknown>) => Promise<T>,
): Promise<T> {
  const resolved = await ctx.targets.resolve(target);
  const probe = await openSession(resolved.transport, resolved.target, {
    computerName: resolved.computerName,
    autoReconnect: false,
  });
  try {
    return await fn(probe);
  } finally {
    await probe.close();
  }
}

async function listSessions(argv: readonly string[], io: CliIo): Promise<number> {
  const { values } = parse(argv, {
    computer: { type: 'string', short: 'c', multiple: true },
    json: { type: 'boolean' },
  });
  if (values.help) return helpFor('session', io);
  return withContext(io, str(values['state-dir']), async (ctx) => {
    const computers = strs(values.computer);
    let rows: SessionRow[];
    if (computers.length > 0) {
      // Get-PSSession -ComputerName: what the agents hold, including sessions other clients opened.
      rows = [];
      const stored = await ctx.store.list();
      for (const target of await expandComputers(computers, io)) {
        for (const info of await agentSessions(ctx, target)) {
          const known = stored.find((s) => s.sessionId === info.sessionId);
          rows.push(sessionRow(rows.length + 1, { name: known?.name ?? info.name, target }, info));
        }
      }
    } else {
      const stored = await ctx.store.list();
      // What the local agent holds answers at once; only the others' agents are asked.
      const held = new Map(
        stored.length === 0
          ? []
          : (await (await ctx.localSession()).request('hosted.list')).map((h) => [h.sessionId, h]),
      );
      const byTarget = new Map<string, Promise<SessionInfo[] | undefined>>();
      for (const s of stored) {
        if (held.has(s.sessionId)) continue;
        if (!byTarget.has(s.target))
          byTarget.set(
            s.target,
            agentSessions(ctx, s.target).catch(() => undefined),
          );
      }
      rows = [];
      for (const [i, s] of stored.entries()) {
        const h = held.get(s.sessionId);
        if (h) {
          rows.push({
            ...sessionRow(i + 1, s, undefined),
            remoteHost: h.remoteHost ?? '',
            state: h.state,
            availability: h.state === 'Opened' ? 'Available' : 'None',
          });
          continue;
        }
        const infos = await byTarget.get(s.target)!;
        const info = infos?.find((candidate) => candidate.sessionId === s.sessionId);
        const r = sessionRow(i + 1, s, info);
        // Reachable agent, session unknown to it: it expired or its agent lost it.
        if (infos && !info) r.state = 'Broken';
        rows.push(r);
      }
    }
    if (values.json) io.stdout.write(`${JSON.stringify(rows)}\n`);
    else if (rows.length > 0) io.stdout.write(sessionTable(rows));
    return ExitCode.Ok;
  });
}

async function connectCmd(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(argv, {
    computer: { type: 'string', short: 'c', multiple: true },
    name: { type: 'string', short: 'n' },
  });
  if (values.help) return helpFor('session', io);
  const which = oneName(positionals, 'connect');
  const computers = strs(values.computer);
  if (computers.length > 1) throw usageError('session connect -c takes one host');
  return withContext(io, str(values['state-dir']), async (ctx) => {
    const name = computers.length === 1 ? await claim(ctx, computers[0]!, which, str(values.name)) : which;
    const stored = await ctx.storedSession(name);
    const host = await ctx.localSession();
    // Connect-PSSession: the local agent resumes it; its RemoteJobs there go on from where they were.
    const info = await host.request('hosted.connect', ctx.relayRequest(stored)).catch((error: unknown) => {
      throw ctx.staleSession(stored, error);
    });
    io.stdout.write(sessionTable([sessionRow(await indexOf(ctx, name), stored, info)]));
    return ExitCode.Ok;
  });
}

/**
 * `session connect ID -c HOST` (Connect-PSSession -ComputerName -InstanceId): a Disconnected session
 * another client opened on HOST (found by id or name in `session list -c HOST`) becomes this
 * client's: its agent hands out a new resume secret, and it is remembered under its name (or
 * `--name`). Returns the name it is remembered by.
 */
async function claim(
  ctx: CliContext,
  target: string,
  which: string,
  wanted: string | undefined,
): Promise<string> {
  if (wanted !== undefined && (await ctx.store.find(wanted))) {
    throw usageError(`a session named ${wanted} exists already`);
  }
  const claimed = await withProbe(ctx, target, async (probe) => {
    const all = (await probe.request('session.list')).filter((info) => info.sessionId !== probe.sessionId);
    const found = all.filter((info) => info.sessionId === which || info.name === which);
    if (found.length === 0) {
      throw new CliError(
        ExitCode.NotFound,
        ProtocolErrorCode.SessionNotFound,
        `no session ${which} on ${target} (rjob session list -c ${target} shows them)`,
      );
    }
    if (found.length > 1)
      throw usageError(`${found.length} sessions on ${target} are named ${which}: give its id`);
    return probe.request('session.claim', { sessionId: found[0]!.sessionId });
  });
  const entry = {
    target,
    sessionId: claimed.sessionId,
    resumeSecret: claimed.resumeSecret,
    createdAtMs: Date.now(),
  };
  const known = await ctx.store.list();
  const previous = known.find((stored) => stored.sessionId === claimed.sessionId);
  if (previous) {
    // Ours already (claimed again): the new secret replaces the old one.
    await ctx.store.put({ ...previous, resumeSecret: claimed.resumeSecret });
    return previous.name;
  }
  const preferred = wanted ?? claimed.info.name;
  const name =
    (await ctx.store.add(entry, preferred)) ??
    (wanted === undefined ? await ctx.store.add(entry, undefined) : undefined);
  if (name === undefined) throw usageError(`a session named ${preferred} exists already`);
  return name;
}

async function disconnectCmd(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(argv, {});
  if (values.help) return helpFor('session', io);
  const name = oneName(positionals, 'disconnect');
  return withContext(io, str(values['state-dir']), async (ctx) => {
    const stored = await ctx.storedSession(name);
    const host = await ctx.localSession();
    // Disconnect-PSSession: its jobs run on remotely; local RemoteJobs with children in it show Disconnected.
    const held = await host.request('hosted.disconnect', { sessionId: stored.sessionId });
    io.stdout.write(
      sessionTable([
        {
          ...sessionRow(await indexOf(ctx, name), stored, undefined),
          ...(held?.remoteHost ? { remoteHost: held.remoteHost } : {}),
          state: 'Disconnected',
          availability: 'None',
        },
      ]),
    );
    return ExitCode.Ok;
  });
}

async function indexOf(ctx: CliContext, name: string): Promise<number> {
  return (await ctx.store.list()).findIndex((entry) => entry.name === name) + 1;
}

async function receiveCmd(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(argv, {
    keep: { type: 'boolean', short: 'k' },
    ndjson: { type: 'boolean' },
    json: { type: 'boolean' },
    'out-target': { type: 'string' },
  });
  if (values.help) return helpFor('session', io);
  const name = oneName(positionals, 'receive');
  const outTarget = str(values['out-target']) ?? 'host';
  if (outTarget !== 'host' && outTarget !== 'job') {
    throw usageError(`--out-target is host or job, not ${outTarget}`);
  }
  if (outTarget === 'job' && (values.keep || values.ndjson)) {
    throw usageError('--keep and --ndjson are for --out-target host; receive the created job instead');
  }
  return withContext(io, str(values['state-dir']), async (ctx) => {
    const s = await ctx.namedSession(name);
    if (outTarget === 'job') return receiveToLocalJobs(ctx, io, name, s, bool(values.json));
    // Receive-PSSession -OutTarget Host: what the session's jobs hold, streamed as `receive` does
    // (each record consumed once written; an interruption leaves the rest there).
    const remote = (await s.jobs.get({})).filter((job) => job.hasMoreData || !isTerminal(job.state));
    if (remote.length === 0) return ExitCode.Ok;
    const { stopped } = await streamRecords(
      io,
      s,
      remote.map((job) => job.id),
      {
        keep: bool(values.keep),
        follow: false,
        format: (record) =>
          values.ndjson ? { target: 'stdout', chunk: `${recordJson(record)}\n` } : formatRecord(io, record),
      },
    );
    if (stopped === 'pipe') return ExitCode.BrokenPipe;
    if (stopped === 'interrupt') return ExitCode.Interrupted;
    return ExitCode.Ok;
  });
}

/**
 * `--out-target job` (Receive-PSSession -OutTarget Job): for each of the session's jobs that is
 * running or holds data, a job in the local agent streams its records, so the streaming outlives
 * this process. The local job is a RemoteJob group (Name the remote job's, Location the session's
 * computer, Command the remote command; `job.start` cannot set those columns) whose one child is
 * this CLI running `receive -s NAME ID --wait`. Only that child consumes the remote records, and
 * the session's reliable channel delivers each once, so every line reaches the local job once.
 */
async function receiveToLocalJobs(
  ctx: CliContext,
  io: CliIo,
  name: string,
  s: Session<unknown>,
  json: boolean,
): Promise<number> {
  const stored = await ctx.storedSession(name);
  // Jobs a local RemoteJob already mirrors (`invoke -s --as-job`, an earlier --out-target job) stay its own.
  const held = await (await ctx.localSession()).request('hosted.list');
  const mirrored = new Set(held.find((h) => h.sessionId === stored.sessionId)?.mirroredJobs ?? []);
  // Listing consumes nothing: every record is left for the local job to receive.
  const remote = (await s.jobs.get({})).filter(
    (job) => (job.hasMoreData || !isTerminal(job.state)) && !mirrored.has(job.id) && !mirrored.has(job.name),
  );
  const session = ctx.relayRequest(stored);
  const created: RemoteJobInfo[] = [];
  for (const job of remote) {
    created.push(
      await onJobSession(ctx, undefined, (local) =>
        local.jobs.startGroup({
          name: job.name,
          type: 'RemoteJob',
          command: job.command,
          location: stored.target,
          children: [
            {
              type: 'RemoteJob',
              name: job.name,
              location: stored.target,
              command: job.command,
              // Mirrored by the local agent through the session it holds: each record moves once.
              definition: { target: stored.target, session, remoteJob: job.id, command: job.command },
            },
          ],
        }),
      ),
    );
  }
  if (json) io.stdout.write(`${JSON.stringify(created.map(jobJson), jsonReplacer)}\n`);
  else if (created.length > 0) io.stdout.write(jobTable(created));
  return ExitCode.Ok;
}

async function removeCmd(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(argv, {});
  if (values.help) return helpFor('session', io);
  const name = oneName(positionals, 'remove');
  return withContext(io, str(values['state-dir']), async (ctx) => {
    const stored = await ctx.storedSession(name);
    const host = await ctx.localSession();
    try {
      // Remove-PSSession: the remote agent stops and removes the session's jobs.
      await host.request('hosted.close', ctx.relayRequest(stored));
    } catch (error) {
      // Already gone on its agent: forgetting the handle is all that is left to do.
      const stale = ctx.staleSession(stored, error);
      if (!(stale instanceof CliError && stale.code === ProtocolErrorCode.SessionNotFound)) throw stale;
    }
    await ctx.store.delete(name);
    return ExitCode.Ok;
  });
}

function oneName(positionals: readonly string[], verb: string): string {
  if (positionals.length !== 1) throw usageError(`session ${verb} needs one session name`);
  return positionals[0]!;
}
