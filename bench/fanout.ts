/**
 * Fleet-scale fan-out (`npm run bench -- fanout`): `hostname` on N = 20, 100, 500 and 1,000 hosts,
 * each host an ssh_config alias over a handful of OpenSSH sshd instances on 127.0.0.x, all at the
 * same concurrency (32, rjob's default throttle). In one run, per N:
 *
 * - raw ssh2 from one Node process (a script spawned like the CLI is, so both pay a Node start);
 * - `xargs -P 32` with OpenSSH;
 * - `rjob invoke` with the BUILT CLI (bin/rjob.cjs and its bundle; run `npm run build` first), defaults:
 *   it reaches the remote user's running agent through its default socket, no Node start per host;
 * - `rjob invoke --as-job` and `rjob wait`, run by the local agent daemon.
 *
 * Prints times, ratios, the controller's peak RSS (per 100 hosts) and the local agent's peak RSS
 * (VmHWM: the most the daemon that ran the --as-job fan-outs ever held, up to that N). Needs root (the sshd
 * fixture); skips otherwise, saying so.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { SSHD_PATH, type SshdFixture, startSshds } from '@rjob/transport-ssh/testing';
import { type BenchResult, stopAgentIn } from './harness.js';

const run = promisify(execFile);
// RJOB_BENCH_FANOUT_SIZES=20,100 for a quicker run.
const SIZES = (process.env.RJOB_BENCH_FANOUT_SIZES ?? '20,100,500,1000').split(',').map(Number);
const SSHDS = 6;
// RJOB_BENCH_CPU_PROF=DIR: V8 CPU profiles of every `rjob invoke` controller and of the remote agent
// (written when it stops) go to DIR, for `node --cpu-prof`'s usual tools. The timings then include
// the profiler's cost.
const PROFILE = process.env.RJOB_BENCH_CPU_PROF
  ? ['--cpu-prof', `--cpu-prof-dir=${process.env.RJOB_BENCH_CPU_PROF}`]
  : [];
const CONCURRENCY = 32;
// The bin users run: it loads the bundle (apps/cli/dist/bundle) with its code cache.
const CLI = fileURLToPath(new URL('../apps/cli/bin/rjob.cjs', import.meta.url));
const BUNDLE = fileURLToPath(new URL('../apps/cli/dist/bundle/rjob.cjs', import.meta.url));
const SSH2 = createRequire(
  fileURLToPath(new URL('../packages/transport-ssh/package.json', import.meta.url)),
).resolve('ssh2');

/** Raw ssh2: every host at CONCURRENCY at once, host key checked, `hostname` exec'd, output counted. */
const RAW_SCRIPT = `
const { Client } = require(${JSON.stringify(SSH2)});
const { readFileSync } = require('node:fs');
const [hostsFile, keyFile, limit] = process.argv.slice(2);
const hosts = JSON.parse(readFileSync(hostsFile, 'utf8'));
const privateKey = readFileSync(keyFile);
let next = 0, ok = 0, failed = 0;
function one(h) {
  return new Promise((resolve) => {
    const client = new Client();
    const expected = Buffer.from(h.key, 'base64');
    client.once('ready', () => {
      client.exec('hostname', (error, channel) => {
        if (error) { failed++; client.end(); return resolve(); }
        let out = '';
        channel.on('data', (d) => (out += d));
        channel.stderr.resume();
        channel.once('close', () => { if (out) ok++; else failed++; client.end(); resolve(); });
      });
    });
    client.once('error', () => { failed++; resolve(); });
    client.connect({ host: h.host, port: h.port, username: h.user, privateKey, hostVerifier: (k) => k.equals(expected) });
  });
}
async function worker() { while (next < hosts.length) await one(hosts[next++]); }
Promise.all(Array.from({ length: Number(limit) }, worker)).then(() => {
  process.stdout.write(JSON.stringify({ ok, failed }));
});
`;

/** Preloaded into the controller: writes its peak RSS (KiB) to a file when it exits. */
const MAXRSS = `
const { writeFileSync } = require('node:fs');
process.on('exit', () => {
  const u = process.resourceUsage();
  try { writeFileSync(process.env.RJOB_BENCH_RSS_FILE, JSON.stringify({ rss: u.maxRSS, cpu: (u.userCPUTime + u.systemCPUTime) / 1000 })); } catch {}
});
`;

function unavailable(): string | undefined {
  if (!existsSync(SSHD_PATH)) return `${SSHD_PATH} not found`;
  if (process.getuid?.() !== 0) return 'the sshd fixture needs root';
  if (!existsSync(BUNDLE)) return 'the CLI is not built: run npm run build first';
  return undefined;
}

interface Timed {
  ms: number;
  rssKiB?: number;
  /** CPU time of the controller process. */
  cpuMs?: number;
  /** CPU time the remote agent daemon spent meanwhile. */
  agentCpuMs?: number;
  /** CPU time the whole machine spent meanwhile (every process: sshds, agents, commands). */
  machineCpuMs?: number;
}

/** Busy CPU time of the whole machine so far, in ms (Linux /proc/stat, all cores). */
async function machineBusyMs(): Promise<number> {
  const stat = await readFile('/proc/stat', 'utf8').catch(() => '');
  const [user, nice, system, , , irq, softirq, steal] = stat
    .split('\n')[0]!
    .split(/\s+/)
    .slice(1)
    .map(Number);
  return ((user! + nice! + system! + irq! + softirq! + (steal ?? 0)) * 1000) / 100;
}

/** utime + stime of a process, in ms (Linux). */
async function cpuOf(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

async function spawnTimed(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  check: (stdout: string, code: number | null) => void,
): Promise<Timed> {
  const busy0 = await machineBusyMs();
  const ms = await new Promise<number>((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr = (stderr + s).slice(-4000)));
    child.once('error', reject);
    child.once('close', (code) => {
      const elapsed = performance.now() - t0;
      try {
        check(stdout, code);
      } catch (error) {
        reject(new Error(`${(error as Error).message}\n${stderr}`));
        return;
      }
      resolve(elapsed);
    });
  });
  return { ms, machineCpuMs: (await machineBusyMs()) - busy0 };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

export async function benchFanout(): Promise<BenchResult[]> {
  const why = unavailable();
  if (why !== undefined) {
    console.log(`\n## Fan-out: SKIPPED (${why})`);
    return [];
  }
  const results: BenchResult[] = [];
  let farm: Awaited<ReturnType<typeof startSshds>> | undefined;
  const dir = await mkdtemp(join(tmpdir(), 'rjob-bench-fan-'));
  let remoteState: string | undefined;
  try {
    await chmod(dir, 0o755);
    farm = await startSshds(
      Array.from({ length: SSHDS }, (_, i) => `127.0.0.${i + 2}`),
      // Many logins at once per sshd: lift the unauthenticated-connection cap (default 10).
      { extraConfig: ['MaxStartups 200', 'MaxSessions 64'] },
    );
    const user = farm[0]!.user;
    const max = Math.max(20, ...SIZES);
    const aliases = Array.from({ length: max }, (_, i) => `f${String(i + 1).padStart(4, '0')}`);
    const of = (i: number): SshdFixture => farm![i % SSHDS]!;

    // $HOME for rjob and the ssh_config for OpenSSH: one alias per host, round robin on the sshds.
    const home = join(dir, 'home');
    await mkdir(join(home, '.ssh'), { recursive: true, mode: 0o700 });
    const knownHosts = join(home, '.ssh', 'known_hosts');
    await writeFile(knownHosts, farm.map((f) => `${f.knownHostsLine}\n`).join(''));
    const configFile = join(home, '.ssh', 'config');
    await writeFile(
      configFile,
      aliases.map((a, i) => `Host ${a}\n  HostName ${of(i).host}\n  Port ${of(i).port}\n`).join('') +
        `Host *\n  User ${user}\n  IdentityFile ${farm[0]!.clientKeyPath}\n  UserKnownHostsFile ${knownHosts}\n` +
        '  StrictHostKeyChecking yes\n  GlobalKnownHostsFile /dev/null\n  ConnectTimeout 60\n',
    );
    await writeFile(join(dir, 'raw.cjs'), RAW_SCRIPT);
    await writeFile(join(dir, 'maxrss.cjs'), MAXRSS);
    for (const n of new Set([20, ...SIZES])) {
      await writeFile(join(dir, `hosts-${n}.txt`), `${aliases.slice(0, n).join('\n')}\n`);
      await writeFile(
        join(dir, `hosts-${n}.json`),
        JSON.stringify(
          aliases.slice(0, n).map((_, i) => ({
            host: of(i).host,
            port: of(i).port,
            user,
            key: of(i).hostKeys[0]!.publicKey.split(' ')[1],
          })),
        ),
      );
    }

    // The remote user's agent, as a first `rjob agent --stdio` over SSH leaves it: a daemon on its
    // default socket (~/.local/state/rjob/agent.sock). Every "host" is this machine and this user.
    remoteState = join('/home', user, '.local', 'state', 'rjob');
    const stateDir = join(dir, 'state');
    await mkdir(stateDir, { mode: 0o700 });
    const baseEnv: NodeJS.ProcessEnv = {
      ...process.env,
      HOME: home,
      SSH_AUTH_SOCK: '',
      RJOB_STATE_DIR: stateDir,
      NO_COLOR: '1',
      RJOB_BENCH_RSS_FILE: join(dir, 'rss'),
    };
    delete baseEnv.RJOB_REMOTE_AGENT;
    delete baseEnv.RJOB_REMOTE_SOCKET;
    await run(process.execPath, [CLI, 'invoke', '-c', aliases[0]!, '--', 'true'], {
      env: {
        ...baseEnv,
        RJOB_REMOTE_AGENT: `exec node ${PROFILE.join(' ')} ${CLI} agent --stdio`,
      },
    });
    if (!existsSync(join(remoteState, 'agent.pid'))) throw new Error('the remote agent did not start');

    const lines = (n: number) => (stdout: string, code: number | null) => {
      const count = stdout.split('\n').filter(Boolean).length;
      if (code !== 0 || count !== n) throw new Error(`exit ${code}, ${count} of ${n} hosts answered`);
    };
    const rawRun = async (n: number): Promise<Timed> => {
      const timed = await spawnTimed(
        process.execPath,
        [
          '-r',
          join(dir, 'maxrss.cjs'),
          join(dir, 'raw.cjs'),
          join(dir, `hosts-${n}.json`),
          farm![0]!.clientKeyPath,
          String(CONCURRENCY),
        ],
        baseEnv,
        (stdout) => {
          const { ok } = JSON.parse(stdout) as { ok: number };
          if (ok !== n) throw new Error(`raw ssh2: ${ok} of ${n} hosts answered`);
        },
      );
      const usage = JSON.parse(await readFile(join(dir, 'rss'), 'utf8')) as { rss: number; cpu: number };
      return { ...timed, rssKiB: usage.rss, cpuMs: usage.cpu };
    };
    const xargsRun = (n: number): Promise<Timed> =>
      spawnTimed(
        'sh',
        [
          '-c',
          `xargs -P ${CONCURRENCY} -I{} ssh -F ${configFile} -o BatchMode=yes {} hostname < ${join(dir, `hosts-${n}.txt`)}`,
        ],
        baseEnv,
        lines(n),
      );
    const agentPid = Number((await readFile(join(remoteState, 'agent.pid'), 'utf8')).trim());
    const rjobRun = async (n: number): Promise<Timed> => {
      const agentBefore = await cpuOf(agentPid);
      const timed = await spawnTimed(
        process.execPath,
        [
          '-r',
          join(dir, 'maxrss.cjs'),
          ...PROFILE,
          CLI,
          'invoke',
          '-c',
          `@${join(dir, `hosts-${n}.txt`)}`,
          '--',
          'hostname',
        ],
        baseEnv,
        lines(n),
      );
      const usage = JSON.parse(await readFile(join(dir, 'rss'), 'utf8')) as { rss: number; cpu: number };
      return {
        ...timed,
        rssKiB: usage.rss,
        cpuMs: usage.cpu,
        agentCpuMs: (await cpuOf(agentPid)) - agentBefore,
      };
    };
    let jobs = 0;
    const asJobRun = async (n: number): Promise<Timed> => {
      const name = `fan${++jobs}`;
      const t0 = performance.now();
      await run(
        process.execPath,
        [
          CLI,
          'invoke',
          '-c',
          `@${join(dir, `hosts-${n}.txt`)}`,
          '--as-job',
          '--name',
          name,
          '--',
          'hostname',
        ],
        { env: baseEnv },
      );
      await run(process.execPath, [CLI, 'wait', name], { env: baseEnv });
      const ms = performance.now() - t0;
      const { stdout } = await run(process.execPath, [CLI, 'receive', name], {
        env: baseEnv,
        maxBuffer: 64 * 1024 * 1024,
      });
      lines(n)(stdout, 0);
      await run(process.execPath, [CLI, 'remove', name], { env: baseEnv });
      return { ms };
    };
    /** The local agent's peak RSS so far, in KiB (0 when it is not running). */
    const localAgentPeakKiB = async (): Promise<number> => {
      const pid = Number((await readFile(join(stateDir, 'agent.pid'), 'utf8').catch(() => '')).trim());
      if (!pid) return 0;
      const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
      return Number(/^VmHWM:\s+(\d+) kB/m.exec(status)?.[1] ?? 0);
    };

    // A verb on an open SSH session (the local agent holds it: `-s` is a relay over that
    // connection) against the same verb on the local jobs, interleaved (issue goal: ≤ 1.5×).
    {
      await run(process.execPath, [CLI, 'session', 'new', aliases[0]!, '--name', 'held'], { env: baseEnv });
      await run(process.execPath, [CLI, 'start', '-s', 'held', '--name', 'k', '--', 'echo k'], {
        env: baseEnv,
      });
      await run(process.execPath, [CLI, 'start', '--name', 'k', '--', 'echo k'], { env: baseEnv });
      const verb = async (args: string[]): Promise<number> => {
        const t0 = performance.now();
        await run(process.execPath, [CLI, ...args], { env: baseEnv });
        return performance.now() - t0;
      };
      for (const [label, local, remote] of [
        ['get', ['get'], ['get', '-s', 'held']],
        ['receive --keep', ['receive', '--keep', 'k'], ['receive', '-s', 'held', '--keep', 'k']],
      ] as const) {
        const localMs: number[] = [];
        const heldMs: number[] = [];
        for (let i = 0; i < 2; i++) await verb([...remote]); // warm
        for (let i = 0; i < 15; i++) {
          localMs.push(await verb([...local]));
          heldMs.push(await verb([...remote]));
        }
        const base = median(localMs);
        const held = median(heldMs);
        const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
        results.push({
          name: `rjob ${label} (local jobs)`,
          iterations: 15,
          meanMs: mean(localMs),
          medianMs: base,
        });
        results.push({
          name: `rjob ${label} -s held (an open SSH session, through the local agent)`,
          iterations: 15,
          meanMs: mean(heldMs),
          medianMs: held,
          baseline: `rjob ${label} (local jobs)`,
          ratio: held / base,
        });
      }
      await run(process.execPath, [CLI, 'session', 'remove', 'held'], { env: baseEnv });
      await run(process.execPath, [CLI, 'remove', 'k'], { env: baseEnv });
    }

    const table: string[] = [];
    for (const n of SIZES) {
      const rounds = n <= 20 ? 5 : n <= 100 ? 3 : 1;
      // Interleaved, so a noisy moment on the shared machine spreads over every contender.
      const samples: Record<string, Timed[]> = { raw: [], xargs: [], rjob: [], asJob: [] };
      await rjobRun(Math.min(n, 20)); // warm caches (page cache of the CLI, sshd binaries)
      for (let r = 0; r < rounds; r++) {
        samples.raw!.push(await rawRun(n));
        samples.xargs!.push(await xargsRun(n));
        samples.rjob!.push(await rjobRun(n));
        samples.asJob!.push(await asJobRun(n));
      }
      const ms = (key: string) => median(samples[key]!.map((t) => t.ms));
      const raw = ms('raw');
      const rssKiB = Math.max(...samples.rjob!.map((t) => t.rssKiB ?? 0));
      const cpu = median(samples.rjob!.map((t) => t.cpuMs ?? 0));
      const agentCpu = median(samples.rjob!.map((t) => t.agentCpuMs ?? 0));
      const push = (name: string, key: string, note = ''): void => {
        if (samples[key]!.length === 0) return;
        const value = ms(key);
        results.push({
          name: `N=${n}: ${name}`,
          iterations: samples[key]!.length,
          meanMs: samples[key]!.reduce((a, t) => a + t.ms, 0) / samples[key]!.length,
          medianMs: value,
          ...(key === 'raw' ? {} : { baseline: `raw ssh2 N=${n}`, ratio: value / raw }),
        });
        if (note) results.at(-1)!.name += ` ${note}`;
      };
      const rawCpu = median(samples.raw!.map((t) => t.cpuMs ?? 0));
      const machine = (key: string): string =>
        `machine CPU ${median(samples[key]!.map((t) => t.machineCpuMs ?? 0)).toFixed(0)} ms`;
      const rawRss = Math.max(...samples.raw!.map((t) => t.rssKiB ?? 0));
      push(
        'raw ssh2, one Node process',
        'raw',
        `[peak RSS ${(rawRss / 1024).toFixed(0)} MiB, CPU ${rawCpu.toFixed(0)} ms, ${machine('raw')}]`,
      );
      push(`xargs -P ${CONCURRENCY} + OpenSSH`, 'xargs', `[${machine('xargs')}]`);
      push(
        'rjob invoke (built CLI)',
        'rjob',
        `[peak RSS ${(rssKiB / 1024).toFixed(0)} MiB, CPU ${cpu.toFixed(0)} ms, remote agents' CPU ${agentCpu.toFixed(0)} ms, ${machine('rjob')}]`,
      );
      const agentPeakKiB = samples.asJob!.length ? await localAgentPeakKiB() : 0;
      push(
        'rjob invoke --as-job + wait',
        'asJob',
        samples.asJob!.length
          ? `[${(ms('asJob') / ms('rjob')).toFixed(2)}× rjob invoke; local agent peak RSS ${(agentPeakKiB / 1024).toFixed(0)} MiB]`
          : '',
      );
      table.push(
        `| ${String(n).padStart(5)} | ${raw.toFixed(0).padStart(7)} | ${ms('xargs').toFixed(0).padStart(7)} | ${ms('rjob').toFixed(0).padStart(7)} | ${(ms('rjob') / raw).toFixed(2).padStart(6)}× | ${(ms('rjob') / ms('xargs')).toFixed(2).padStart(6)}× | ${samples.asJob!.length ? `${ms('asJob').toFixed(0)} (${(ms('asJob') / ms('rjob')).toFixed(2)}×, agent ${(agentPeakKiB / 1024).toFixed(0)} MiB)` : '-'} | ${(rssKiB / 1024).toFixed(0)} MiB (${(rssKiB / 1024 / (n / 100)).toFixed(1)} MiB/100 hosts) |`,
      );
    }
    console.log(
      '\n| N     | raw ms  | xargs ms | rjob ms | rjob/raw | rjob/xargs | as-job ms (÷ rjob, agent peak RSS) | rjob peak RSS |',
    );
    console.log(
      '|-------|---------|----------|---------|----------|------------|-----------|---------------|',
    );
    for (const line of table) console.log(line);
    return results;
  } finally {
    // The local agent that ran the --as-job fan-outs.
    await run(process.execPath, [CLI, 'agent', 'stop'], {
      // HOME as the runs had it: the bin's code cache stays in the bench's directory.
      env: { ...process.env, HOME: join(dir, 'home'), RJOB_STATE_DIR: join(dir, 'state') },
    }).catch(() => {});
    if (remoteState) await stopAgentIn(remoteState);
    await farm?.stopAll();
    await rm(dir, { recursive: true, force: true });
  }
}
