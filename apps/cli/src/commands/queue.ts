/**
 * pueue-style queue verbs: `rjob group` (job groups with a parallel limit, kept by the agent) and
 * `rjob send` (write to a running job's stdin). `rjob start --after/--group` is in jobs.ts.
 */
import type { JobGroupInfo } from '@rjob/core';
import { bool, parse, positiveInt, selectors, str } from '../args.js';
import { table } from '../format.js';
import { helpFor } from '../help.js';
import { type CliIo, ExitCode, usageError } from '../io.js';
import { onJobSession, withContext } from '../run-command.js';

const SESSION_OPTION = { session: { type: 'string', short: 's' } } as const;

/** `rjob group list | add NAME --parallel N | set NAME --parallel N | remove NAME`. */
export async function group(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(argv, {
    ...SESSION_OPTION,
    parallel: { type: 'string', short: 'p' },
    json: { type: 'boolean' },
  });
  if (values.help) return helpFor('group', io);
  const [action = 'list', name, ...extra] = positionals;
  if (extra.length > 0) throw usageError(`unexpected argument ${extra[0]}`);
  const parallelText = str(values.parallel);
  let call: (request: Requester) => Promise<JobGroupInfo[]>;
  if (action === 'list') {
    if (name !== undefined) throw usageError(`unexpected argument ${name}`);
    call = (request) => request('group.list', undefined);
  } else if (action === 'add' || action === 'set') {
    if (name === undefined) throw usageError(`group ${action} needs a NAME`);
    if (parallelText === undefined) throw usageError(`group ${action} needs --parallel N`);
    const parallel = positiveInt(parallelText, '--parallel');
    call = async (request) => [await request(`group.${action}`, { name, parallel })];
  } else if (action === 'remove' || action === 'rm') {
    if (name === undefined) throw usageError('group remove needs a NAME');
    call = async (request) => [await request('group.remove', { name })];
  } else {
    throw usageError(`group takes list, add, set or remove, not ${action}`);
  }
  if (parallelText !== undefined && action !== 'add' && action !== 'set') {
    throw usageError(`--parallel is for group add and group set`);
  }
  return withContext(io, str(values['state-dir']), async (ctx) =>
    onJobSession(ctx, str(values.session), async (session) => {
      const request: Requester = (method, params) =>
        (session.request as (m: string, p: unknown) => Promise<never>)(method, params);
      const groups = await call(request);
      if (values.json) io.stdout.write(`${JSON.stringify(groups)}\n`);
      else io.stdout.write(groupTable(groups));
      return ExitCode.Ok;
    }),
  );
}

type Requester = (method: string, params: unknown) => Promise<never>;

function groupTable(groups: readonly JobGroupInfo[]): string {
  return table(
    ['Name', 'Parallel', 'Running', 'Waiting'],
    groups.map((each) => [
      each.name,
      each.parallel === null ? 'unlimited' : String(each.parallel),
      String(each.running),
      String(each.waiting),
    ]),
  );
}

/** The most bytes of piped input one `job.send` carries. */
const SEND_CHUNK_BYTES = 256 * 1024;

/**
 * `rjob send ID TEXT…` writes TEXT and a newline to the job's stdin; `--stdin` copies this
 * command's stdin there until end of file; `--eof` closes the job's stdin afterwards (alone: only
 * closes it). The job must have been started with `--stdin-open`.
 */
export async function send(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals, rest } = parse(argv, {
    ...SESSION_OPTION,
    stdin: { type: 'boolean' },
    eof: { type: 'boolean' },
    'no-newline': { type: 'boolean', short: 'n' },
  });
  if (values.help) return helpFor('send', io);
  const [id, ...words] = [...positionals, ...(rest ?? [])];
  if (id === undefined) throw usageError('send needs a job id or name');
  const fromStdin = bool(values.stdin);
  const end = bool(values.eof);
  if (fromStdin && words.length > 0) throw usageError('send takes TEXT or --stdin, not both');
  if (!fromStdin && words.length === 0 && !end)
    throw usageError('nothing to send: give TEXT, --stdin or --eof');
  if (fromStdin && !io.stdin) throw usageError('--stdin: this rjob has no stdin');
  const [selector] = selectors([id]);
  return withContext(io, str(values['state-dir']), async (ctx) =>
    onJobSession(ctx, str(values.session), async (session) => {
      const write = (data: string | Uint8Array | undefined, last: boolean): Promise<unknown> =>
        session.request('job.send', {
          selector: selector!,
          ...(data === undefined ? {} : { data }),
          ...(last ? { end: true } : {}),
        });
      if (fromStdin) {
        // One chunk at a time, each answered once it is in the job's pipe: a slow reader slows us.
        for await (const chunk of io.stdin!) {
          const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
          for (let at = 0; at < bytes.length; at += SEND_CHUNK_BYTES) {
            await write(new Uint8Array(bytes.subarray(at, at + SEND_CHUNK_BYTES)), false);
          }
        }
        if (end) await write(undefined, true);
      } else {
        const text =
          words.length > 0 ? `${words.join(' ')}${bool(values['no-newline']) ? '' : '\n'}` : undefined;
        await write(text, end);
      }
      return ExitCode.Ok;
    }),
  );
}
