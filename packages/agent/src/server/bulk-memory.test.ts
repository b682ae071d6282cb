/**
 * DONE-WHEN 7: a remote job printing 1 GiB keeps agent and client memory bounded. The agent runs
 * as a real daemon in its own process (so its peak RSS is its own), the client is the session
 * client of @rjob/core in this process; the job's output goes through the agent's disk spool and
 * the session's credit-based flow control, never through an unbounded buffer.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSession, type Session, unixSocketTransport } from '@rjob/core';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { socketIsLive } from '../doors/unix-door.js';
import { AGENT_ENTRY, killChildren } from '../fixtures/agent-test-client.js';

const MiB = 1024 * 1024;
const TOTAL_BYTES = 2 ** 30;
const LINE_BYTES = 1024;
/**
 * The bound for both sides. Measured on the 2-core development machine (five runs): the agent
 * daemon peaks at 200–220 MiB RSS, of which about 86 MiB is the bare daemon running from source
 * (tsx loaded) before the job; the client's RSS grows by 35–45 MiB while receiving. Where the
 * agent's share comes from, all bounded whatever the job prints: the job's staging buffer (4 MiB)
 * before its spool, the spool's write buffer and recent-record cache (4 MiB each), batches of up
 * to 1 MiB in flight within the session's 8 MiB window, and the garbage collector's slack on top.
 * 320 MiB leaves about 45% headroom over the agent's worst run for GC timing on a busier machine,
 * and is still a third of the output: memory that grew with the output would pass it early on.
 */
const BOUND_BYTES = 320 * MiB;

let dir: string;
const children: ChildProcess[] = [];
let session: Session<string> | undefined;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rjob-bulk-'));
});

afterEach(async () => {
  await session?.close().catch(() => {});
  session = undefined;
  await killChildren(children);
  await rm(dir, { recursive: true, force: true });
});

async function until(condition: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, 20));
}

/** A field of /proc/<pid>/status in bytes (VmHWM: peak resident set; VmRSS: current). */
async function procStatusBytes(pid: number, field: 'VmHWM' | 'VmRSS'): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status);
  if (!match) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

/** User plus system CPU time of a process so far (/proc/<pid>/stat, in clock ticks of 1/100 s). */
async function procCpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may contain spaces) start at state, field 3.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

it('streams 1 GiB of output from a remote job with agent and client memory bounded', async () => {
  const socketPath = join(dir, 'agent.sock');
  const daemon = spawn(
    process.execPath,
    [
      '--conditions=@rjob/source',
      '--import',
      'tsx',
      AGENT_ENTRY,
      'daemon',
      '--state-dir',
      dir,
      '--socket',
      socketPath,
    ],
    { stdio: ['ignore', 'inherit', 'inherit'] },
  );
  children.push(daemon);
  await until(() => socketIsLive(socketPath));
  const agentPid = daemon.pid!;

  session = await openSession(unixSocketTransport, socketPath);
  // Warm up both sides (code loaded, JIT, first job type use) before taking the baselines.
  const warm = session.invoke({ definition: { command: 'echo warm' } });
  for await (const _ of warm) {
    // drain
  }
  await warm.result;
  const agentBaseline = await procStatusBytes(agentPid, 'VmRSS');
  const clientBaseline = process.memoryUsage().rss;
  const clientCpuBaseline = process.cpuUsage();

  let clientPeak = clientBaseline;
  const sampler = setInterval(() => {
    clientPeak = Math.max(clientPeak, process.memoryUsage().rss);
  }, 50);
  let bytes = 0;
  let records = 0;
  let wrongLines = 0;
  try {
    // 1023 x's and a newline per line; head cuts exactly 2^30 bytes, which is 2^20 whole lines.
    const invocation = session.invoke({
      definition: {
        command: `yes "$(head -c ${LINE_BYTES - 1} /dev/zero | tr '\\0' x)" | head -c ${TOTAL_BYTES}`,
      },
    });
    for await (const record of invocation) {
      if (record.stream !== 'output') continue;
      const line = record.data as string;
      if (line.length !== LINE_BYTES - 1) wrongLines++;
      bytes += line.length + 1;
      records++;
    }
    expect((await invocation.result).state).toBe('Completed');
  } finally {
    clearInterval(sampler);
  }
  clientPeak = Math.max(clientPeak, process.memoryUsage().rss);
  const agentPeak = await procStatusBytes(agentPid, 'VmHWM');
  const agentCpuS = await procCpuSeconds(agentPid);
  const clientCpu = process.cpuUsage(clientCpuBaseline);

  expect(bytes).toBe(TOTAL_BYTES);
  expect(records).toBe(TOTAL_BYTES / LINE_BYTES);
  expect(wrongLines).toBe(0);
  // Printed so the figures behind BOUND_BYTES can be checked on another machine.
  console.log(
    `1 GiB through a session: agent peak RSS ${(agentPeak / MiB).toFixed(0)} MiB (baseline ${(agentBaseline / MiB).toFixed(0)} MiB), ` +
      `client RSS growth ${((clientPeak - clientBaseline) / MiB).toFixed(0)} MiB; ` +
      `CPU: agent ${agentCpuS.toFixed(1)} s, client ${((clientCpu.user + clientCpu.system) / 1e6).toFixed(1)} s`,
  );
  expect(agentPeak).toBeLessThan(BOUND_BYTES);
  expect(clientPeak - clientBaseline).toBeLessThan(BOUND_BYTES);
}, 180_000);
