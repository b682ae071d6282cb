export { COMMAND_EXITED, type CommandTarget, commandTransport } from './command-transport.js';
export { cmdTargets, commandFor, DEFAULT_TEMPLATE } from './plugin.js';
