// Runs the agent command line; the bin shim loads the built copy of this file.
import { main } from './cli-main.js';

process.exit(await main(process.argv.slice(2)));
