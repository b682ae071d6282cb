/**
 * The `rjob` command line: picks the verb and runs it. Each verb is a plain exported async function
 * `(argv, io) => exit code`, loaded lazily so `rjob get` does not load the SSH stack.
 */
import { helpFor } from './help.js';
import { type CliIo, ExitCode } from './io.js';

type Command = (argv: readonly string[], io: CliIo) => Promise<number>;

const COMMANDS: Record<string, () => Promise<Command>> = {
  start: async () => (await import('./commands/jobs.js')).start,
  get: async () => (await import('./commands/jobs.js')).get,
  receive: async () => (await import('./commands/receive.js')).receive,
  wait: async () => (await import('./commands/jobs.js')).wait,
  stop: async () => (await import('./commands/jobs.js')).stop,
  remove: async () => (await import('./commands/jobs.js')).remove,
  clean: async () => (await import('./commands/jobs.js')).clean,
  restart: async () => (await import('./commands/jobs.js')).restart,
  pause: async () => (await import('./commands/jobs.js')).pause,
  resume: async () => (await import('./commands/jobs.js')).resume,
  group: async () => (await import('./commands/queue.js')).group,
  send: async () => (await import('./commands/queue.js')).send,
  invoke: async () => (await import('./commands/invoke.js')).invoke,
  session: async () => (await import('./commands/session.js')).session,
  enter: async () => (await import('./commands/enter.js')).enter,
  agent: async () => (await import('./commands/agent.js')).agent,
  completion: async () => (await import('./commands/completion.js')).completion,
};

/** PowerShell's verbs, for people with the muscle memory. */
const ALIASES: Record<string, string> = {
  'start-job': 'start',
  'get-job': 'get',
  'receive-job': 'receive',
  'wait-job': 'wait',
  'stop-job': 'stop',
  'remove-job': 'remove',
  'invoke-command': 'invoke',
  'enter-pssession': 'enter',
  rm: 'remove',
  ls: 'get',
};

/** Runs one command line; resolves with the exit code. Errors become one line on stderr. */
export async function run(argv: readonly string[], io: CliIo): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined || first === '--help' || first === '-h' || first === 'help') {
    if (first === 'help' && rest[0]) return helpFor(rest[0], io);
    helpFor('rjob', io);
    return first === undefined ? ExitCode.Usage : ExitCode.Ok;
  }
  if (first === '--version' || first === '-V') {
    io.stdout.write(`${await (await import('./version.js')).cliVersion()}\n`);
    return ExitCode.Ok;
  }
  const verb = ALIASES[first.toLowerCase()] ?? first;
  const load = COMMANDS[verb];
  try {
    if (!load) {
      io.stderr.write(`rjob: unknown command ${first}; see rjob --help (ERR_USAGE)\n`);
      return ExitCode.Usage;
    }
    return await (await load())(rest, io);
  } catch (error) {
    // Loaded when needed: it brings in the core library, which `agent --stdio` does without.
    const { describeError } = await import('./errors.js');
    const { exitCode, line } = describeError(error);
    io.stderr.write(`rjob: ${line}\n`);
    if (io.env.RJOB_DEBUG && error instanceof Error && error.stack) io.stderr.write(`${error.stack}\n`);
    return exitCode;
  }
}
