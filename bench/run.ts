/**
 * `npm run bench`: every figure next to its raw baseline, measured in the same run on the same
 * machine. Pass section names (codec, thread, process) to run only those.
 */
import { benchCli } from './cli.js';
import { benchCodec } from './codec.js';
import { benchFanout } from './fanout.js';
import { printResults } from './harness.js';
import { benchProcess } from './process.js';
import { benchReceive } from './receive.js';
import { benchRemote } from './remote.js';
import { benchSsh } from './ssh.js';
import { benchThread } from './thread.js';
import { benchWs } from './ws.js';

const sections: Record<string, { title: string; run: () => Promise<import('./harness.js').BenchResult[]> }> =
  {
    cli: {
      title: 'rjob start-up: the built CLI vs node -e 0, same run (target: get ≤ 1.3×; ratio of medians)',
      run: benchCli,
    },
    codec: { title: 'Value codec (decision: docs/decisions.md)', run: benchCodec },
    thread: { title: 'ThreadJob (targets: warm start < 1 ms; ≥ 500k records/s)', run: benchThread },
    process: { title: 'BackgroundJob (target: within 1.2× of raw spawn)', run: benchProcess },
    receive: {
      title:
        'Local receive: the built CLI consuming a finished job into /dev/null vs the raw pipe (RJOB_BENCH_RECEIVE_BIN for another build)',
      run: benchReceive,
    },
    remote: {
      title: 'Remoting over the local agent (Unix socket); throughput ratio is rate / raw rate',
      run: benchRemote,
    },
    ssh: {
      title:
        'RemoteJob over SSH (OpenSSH sshd fixture; targets: invoke ≤ 1.2× raw exec, bulk ≥ 0.8×, fan-out faster than xargs)',
      run: benchSsh,
    },
    fanout: {
      title:
        'Fan-out of hostname to N ssh_config hosts at concurrency 32 (goal: rjob ≤ 1.2× raw ssh2 at every N); ratio vs raw ssh2',
      run: benchFanout,
    },
    ws: {
      title: 'Remoting over wss:// on loopback vs raw ws over TLS; throughput ratio is rate / raw rate',
      run: benchWs,
    },
  };

const wanted = process.argv.slice(2);
for (const [key, section] of Object.entries(sections)) {
  if (wanted.length > 0 && !wanted.includes(key)) continue;
  printResults(section.title, await section.run());
}
