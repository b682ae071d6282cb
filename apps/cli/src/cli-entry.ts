// What bin/rjob.cjs runs: the CLI on this process's stdio. No top-level await: the bundle is a
// script (dist/bundle/rjob.cjs) so that node can keep a code cache of it.
import { run } from './cli.js';
import { defaultIo } from './io.js';

// A reader that went away (`rjob get | head`) is not an error to report: the writes fail with
// EPIPE, the command sees that and ends quietly (exit 141, as a Unix tool killed by SIGPIPE).
let brokenPipe = false;
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code !== 'EPIPE') throw error;
  brokenPipe = true;
});
void run(process.argv.slice(2), defaultIo()).then((code) => {
  if (brokenPipe) process.exit(code === 0 ? 141 : code);
  // Exit even if a transport left a handle open (an SSH connection closing lazily), once output is out.
  process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
});
