/**
 * `rjob enter HOST|SESSION` (Enter-PSSession): a prompt whose job verbs run inside the remote
 * session and whose other lines run as shell commands there. A named session stays after `exit`;
 * a host gets a temporary session that ends, with its jobs, when the prompt does.
 */
import { createInterface } from 'node:readline';
import { PassThrough } from 'node:stream';
import { openSession, type Session } from '@rjob/core';
import { parse, selectors, str } from '../args.js';
import { run } from '../cli.js';
import type { CliContext } from '../context.js';
import { describeError, oneLine } from '../errors.js';
import { dataText, printRecord } from '../format.js';
import { helpFor } from '../help.js';
import { type CliIo, ExitCode, usageError } from '../io.js';
import { withContext } from '../run-command.js';

const VERBS = new Set(['start', 'get', 'receive', 'wait', 'stop', 'remove', 'help']);

export async function enter(argv: readonly string[], io: CliIo): Promise<number> {
  let stateDir: string | undefined;
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') return helpFor('enter', io);
    if (arg === '--state-dir') stateDir = argv[++i];
    else if (arg.startsWith('--state-dir=')) stateDir = arg.slice('--state-dir='.length);
    else if (arg.startsWith('-')) throw usageError(`unknown option ${arg}`);
    else positionals.push(arg);
  }
  if (positionals.length !== 1) throw usageError('enter needs one host or session name');
  const input = io.stdin;
  if (!input) throw usageError('enter needs an input stream');
  const what = positionals[0]!;
  return withContext(io, stateDir, async (ctx) => {
    const named = (await ctx.store.find(what)) !== undefined;
    const session = named ? await ctx.namedSession(what) : await temporarySession(ctx, what);
    const label = named ? (await ctx.storedSession(what)).target : what;
    try {
      await prompt(io, input, session, label, str(stateDir));
    } finally {
      if (!named) {
        // Exit-PSSession of a temporary session: it ends, and its jobs with it.
        await session.close();
      }
    }
    return ExitCode.Ok;
  });
}

async function temporarySession(ctx: CliContext, host: string): Promise<Session<unknown>> {
  const resolved = await ctx.targets.resolve(host);
  return openSession(resolved.transport, resolved.target, {
    computerName: resolved.computerName,
    autoReconnect: false,
  });
}

async function prompt(
  io: CliIo,
  input: NonNullable<CliIo['stdin']>,
  session: Session<unknown>,
  label: string,
  stateDir: string | undefined,
): Promise<void> {
  const rl = createInterface({ input, output: io.stdout, terminal: input.isTTY === true });
  rl.setPrompt(`[${label}] rjob> `);
  rl.prompt();
  try {
    for await (const raw of rl) {
      const line = raw.trim();
      if (line === 'exit' || line === 'exit-pssession') break;
      if (line !== '') await runLine(io, session, line, stateDir);
      rl.prompt();
    }
  } finally {
    rl.close();
  }
}

async function runLine(
  io: CliIo,
  session: Session<unknown>,
  line: string,
  stateDir: string | undefined,
): Promise<void> {
  const redirect = /^(.*?)\s+(>>?)\s*(\S+)$/.exec(line);
  const words = splitWords(redirect ? redirect[1]! : line);
  if (!VERBS.has(words[0] ?? '')) {
    await shell(io, session, line);
    return;
  }
  const extra = stateDir ? ['--state-dir', stateDir] : [];
  if (!redirect) {
    await run([...words, ...extra], { ...io, session });
    return;
  }
  // `receive events > ~/events.txt`: the file is written where the session is, not here.
  const path = redirect[3]!;
  const append = redirect[2] === '>>';
  if (words[0] === 'receive' && (await receiveToFile(io, session, words.slice(1), path, append))) return;
  const captured = new PassThrough();
  const chunks: Buffer[] = [];
  captured.on('data', (chunk: Buffer) => chunks.push(chunk));
  const code = await run([...words, ...extra], { ...io, stdout: captured, session });
  if (code !== ExitCode.Ok && chunks.length === 0) return;
  await shell(io, session, `cat ${append ? '>>' : '>'} ${path}`, Buffer.concat(chunks).toString('utf8'));
}

/**
 * `receive SELECTOR… [--keep] > FILE` through the agent's `job.receiveToFile`: the agent writes the
 * output stream itself and consumes the records only once the file is written, where capturing
 * them here and piping them to `cat` would lose them when the write fails. The other streams are
 * shown here, as PowerShell shows them when only the success stream is redirected. Returns false
 * for what it does not cover (--wait, --ndjson, -s, a path the shell would have to expand), which
 * goes the capture way.
 */
async function receiveToFile(
  io: CliIo,
  session: Session<unknown>,
  argv: readonly string[],
  path: string,
  append: boolean,
): Promise<boolean> {
  if (/[$`'"*?[\]{}\\]/.test(path)) return false;
  let parsed: ReturnType<typeof parseReceive>;
  try {
    parsed = parseReceive(argv);
  } catch {
    // Let the receive command report the usage error as it always does.
    return false;
  }
  const { values, positionals } = parsed;
  if (values.wait || values.ndjson || values.session !== undefined || values.help) return false;
  if (positionals.length === 0) return false;
  try {
    const written = await session.jobs.receiveToFile(selectors(positionals), path, {
      keep: values.keep === true,
      append,
    });
    for (const record of written.other) printRecord(io, record);
  } catch (error) {
    io.stderr.write(`rjob: ${describeError(error).line}\n`);
  }
  return true;
}

function parseReceive(argv: readonly string[]) {
  return parse(argv, {
    session: { type: 'string', short: 's' },
    keep: { type: 'boolean', short: 'k' },
    wait: { type: 'boolean', short: 'w' },
    ndjson: { type: 'boolean' },
  });
}

/** Runs a line as a shell command in the session and prints what it produced. */
async function shell(io: CliIo, session: Session<unknown>, command: string, input?: string): Promise<void> {
  try {
    const invocation = session.invoke(
      { definition: { command, ...(input === undefined ? {} : { input }) } },
      {
        onRecord: (record) => {
          if (!record.reason) printRecord(io, record);
        },
      },
    );
    const info = await invocation.result;
    if (info.state === 'Failed' && info.reason) io.stderr.write(`rjob: ${oneLine(dataText(info.reason))}\n`);
  } catch (error) {
    io.stderr.write(`rjob: ${describeError(error).line}\n`);
  }
}

/** Words as a shell would split them: whitespace, with single and double quotes grouping. */
export function splitWords(line: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let quote: string | undefined;
  for (const ch of line) {
    if (quote) {
      if (ch === quote) quote = undefined;
      else word += ch;
    } else if (ch === '"' || ch === "'") {
      quote = ch;
      inWord = true;
    } else if (/\s/.test(ch)) {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
    } else {
      word += ch;
      inWord = true;
    }
  }
  if (inWord) words.push(word);
  return words;
}
