// What bin/rjob.js runs: the CLI on this process's stdio.
import { run } from './cli.js';
import { defaultIo } from './io.js';

const code = await run(process.argv.slice(2), defaultIo());
// Exit even if a transport left a handle open (an SSH connection closing lazily), once output is out.
process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
