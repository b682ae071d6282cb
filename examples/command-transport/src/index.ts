export { type CommandTarget, commandTransport } from './command-transport.js';
