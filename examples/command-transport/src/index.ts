export { COMMAND_EXITED, type CommandTarget, commandTransport } from './command-transport.js';
