export { agent } from './commands/agent.js';
export { get, remove, start, stop, wait } from './commands/jobs.js';
export { receive } from './commands/receive.js';
export { enter } from './commands/enter.js';
export { invoke } from './commands/invoke.js';
export { session } from './commands/session.js';
export { completion } from './commands/completion.js';
export { run } from './cli.js';
export { CliError, type CliIo, defaultIo, ExitCode, type ExitCodeValue } from './io.js';
