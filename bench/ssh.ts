/**
 * RemoteJob over SSH against the OpenSSH sshd test fixture (DESIGN §6), each figure next to its raw
 * baseline from the same run: invoke on an open session vs a raw ssh2 exec, session open vs a raw
 * ssh2 handshake, bulk output vs a raw ssh2 channel, and fan-out to 20 hosts vs `xargs -P 20` with
 * OpenSSH and vs raw ssh2 to all hosts at once. Needs root (the fixture starts sshd); skips
 * otherwise, saying so.
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { invokeMany, openSession } from '@rjob/core';
import { sshTransport } from '@rjob/transport-ssh';
import { SSHD_PATH, type SshdFixture, startSshd, startSshds } from '@rjob/transport-ssh/testing';
import { Client } from 'ssh2';
import { type BenchResult, compare, invokeOutputBytes, measure, stopAgentIn, throughput } from './harness.js';

const run = promisify(execFile);

const BULK_BYTES = 256 * 1024 * 1024;
// 1 KiB lines, as in bench/remote.ts: the shape of real log output.
const BULK_COMMAND = `yes "$(head -c 1023 /dev/zero | tr '\\0' x)" | head -c ${BULK_BYTES}`;
const FAN_OUT_HOSTS = 20;

const TSX_LOADER = createRequire(import.meta.url).resolve('tsx');
const AGENT_ENTRY = fileURLToPath(new URL('../packages/agent/src/cli-entry.ts', import.meta.url));

/**
 * What `rjob agent --stdio` does once its daemon runs: pipe the channel to the daemon's socket. The
 * bench runs the agent from source through tsx, whose start-up (hundreds of ms of compiling) a
 * built agent does not pay; this bridge stands in for the built one where many links are opened.
 */
const BRIDGE = `
const net = require('node:net');
const socket = net.connect(process.argv[2]);
process.stdin.pipe(socket);
socket.pipe(process.stdout);
socket.on('close', () => process.exit(0));
process.stdin.on('end', () => socket.end());
`;

/**
 * The floor for any agent on the remote side: a bare Node process between the command and the
 * channel, copying the output to stdout. With a file argument it also appends every chunk with a
 * CRC to that file, synchronously, the least an agent that keeps output on disk must do. No
 * framing, no records, no acknowledgements. rjob's bulk figures compare against these rows as
 * well as against the raw channel.
 */
const FLOOR_RELAY = `
const { spawn } = require('node:child_process');
const { closeSync, openSync, writevSync } = require('node:fs');
const { Socket } = require('node:net');
const { crc32 } = require('node:zlib');
const fd = process.argv[2] === '-' ? undefined : openSync(process.argv[2], 'w');
const out = new Socket({ fd: 1, readable: false });
const child = spawn('/bin/sh', ['-c', process.argv[3]], { stdio: ['ignore', 'pipe', 'inherit'] });
child.stdout.on('data', (chunk) => {
  if (fd !== undefined) {
    const header = Buffer.allocUnsafe(8);
    header.writeUInt32LE(chunk.length, 0);
    header.writeUInt32LE(crc32(chunk), 4);
    writevSync(fd, [header, chunk]);
  }
  if (!out.write(chunk)) {
    child.stdout.pause();
    out.once('drain', () => child.stdout.resume());
  }
});
child.stdout.on('end', () => {
  if (fd !== undefined) closeSync(fd);
  out.end();
});
`;

function unavailable(): string | undefined {
  if (!existsSync(SSHD_PATH)) return `${SSHD_PATH} not found`;
  if (process.getuid?.() !== 0) return 'the sshd fixture needs root';
  return undefined;
}

function hostKeyOf(fixture: SshdFixture): Buffer {
  return Buffer.from(fixture.hostKeys[0]!.publicKey.split(' ')[1]!, 'base64');
}

/** A raw ssh2 connection, checking the host key against the fixture's (as known_hosts would). */
function rawConnect(fixture: SshdFixture, privateKey: Buffer): Promise<Client> {
  const expected = hostKeyOf(fixture);
  return new Promise((resolve, reject) => {
    const client = new Client();
    client.once('ready', () => resolve(client));
    client.once('error', reject);
    client.connect({
      host: fixture.host,
      port: fixture.port,
      username: fixture.user,
      privateKey,
      hostVerifier: (key: Buffer) => key.equals(expected),
    });
  });
}

/** Runs `command` on an open ssh2 connection; resolves with the stdout byte count at channel close. */
function rawExec(client: Client, command: string): Promise<number> {
  return new Promise((resolve, reject) => {
    client.exec(command, (error, channel) => {
      if (error) return reject(error);
      let bytes = 0;
      channel.on('data', (chunk: Buffer) => (bytes += chunk.length));
      channel.stderr.resume();
      channel.once('close', () => resolve(bytes));
    });
  });
}

export async function benchSsh(): Promise<BenchResult[]> {
  const why = unavailable();
  if (why !== undefined) {
    console.log(`\n## RemoteJob over SSH: SKIPPED (${why})`);
    return [];
  }
  const fixtures: SshdFixture[] = [];
  const dirs: string[] = [];
  let farm: Awaited<ReturnType<typeof startSshds>> | undefined;
  let stateDir: string | undefined;
  const results: BenchResult[] = [];
  try {
    const box = await startSshd();
    fixtures.push(box);
    const addresses = Array.from({ length: FAN_OUT_HOSTS }, (_, i) => `127.0.0.${i + 2}`);
    farm = await startSshds(addresses);

    const dir = await mkdtemp(join(tmpdir(), 'rjob-bench-ssh-'));
    dirs.push(dir);
    await chmod(dir, 0o755);
    const knownHosts = join(dir, 'known_hosts');
    await writeFile(knownHosts, [box, ...farm].map((f) => `${f.knownHostsLine}\n`).join(''));
    const hostBlock = (alias: string, f: SshdFixture) =>
      `Host ${alias}\n  HostName ${f.host}\n  Port ${f.port}\n  User ${f.user}\n  IdentityFile ${f.clientKeyPath}\n`;
    const farmAliases = farm.map((_, i) => `h${i + 1}`);
    const configFile = join(dir, 'config');
    await writeFile(
      configFile,
      hostBlock('box', box) +
        farm.map((f, i) => hostBlock(farmAliases[i]!, f)).join('') +
        `Host *\n  StrictHostKeyChecking yes\n  UserKnownHostsFile ${knownHosts}\n  GlobalKnownHostsFile /dev/null\n`,
    );
    const bridgePath = join(dir, 'bridge.cjs');
    await writeFile(bridgePath, BRIDGE, { mode: 0o644 });
    const floorPath = join(dir, 'floor-relay.cjs');
    await writeFile(floorPath, FLOOR_RELAY, { mode: 0o644 });

    // The agent runs as the fixture's user, with its state in a dir that user owns.
    stateDir = await mkdtemp(join(tmpdir(), 'rjob-bench-ssh-agent-'));
    const uid = Number(execFileSync('id', ['-u', box.user]).toString().trim());
    const gid = Number(execFileSync('id', ['-g', box.user]).toString().trim());
    await chown(stateDir, uid, gid);
    await chmod(stateDir, 0o700);
    const fromSource = `TMPDIR=${stateDir} exec node --conditions=@rjob/source --import ${TSX_LOADER} ${AGENT_ENTRY} --stdio --state-dir ${stateDir}`;
    const bridged = `exec node ${bridgePath} ${join(stateDir, 'agent.sock')}`;
    const base = { sshConfig: { configFile, systemConfigFile: null }, agent: false as const };
    // Where the daemon that the first `--stdio` starts listens: every fixture host is this machine.
    const agentSocket = join(stateDir, 'agent.sock');

    // Open (and leave open) the session the per-command figures use; it also starts the daemon.
    const session = await openSession(sshTransport({ ...base, agentCommand: fromSource }), 'box', {
      handshakeTimeoutMs: 60_000,
    });
    const boxKey = await readFile(box.clientKeyPath);
    const raw = await rawConnect(box, boxKey);
    try {
      const rawTrue = await measure('raw: ssh2 exec `true` on an open connection → close', 50, () =>
        rawExec(raw, 'true'),
      );
      const invokeTrue = await measure('invoke `true` on an open SSH session → end', 50, () =>
        invokeOutputBytes(session, 'true'),
      );
      results.push(rawTrue, compare(invokeTrue, rawTrue));

      const handshake = await measure('raw: ssh2 handshake + auth (new connection)', 10, async () =>
        (await rawConnect(box, boxKey)).end(),
      );
      const openBridged = await measure(
        'session open: handshake, exec, bridge to running agent',
        10,
        async () => {
          const s = await openSession(sshTransport({ ...base, agentCommand: bridged }), 'box');
          await s.close();
        },
      );
      const openSource = await measure('session open: `agent --stdio` from source (tsx)', 5, async () => {
        const s = await openSession(sshTransport({ ...base, agentCommand: fromSource }), 'box', {
          handshakeTimeoutMs: 60_000,
        });
        await s.close();
      });
      const openSocket = await measure(
        'session open: straight to the running agent (agentSocket)',
        10,
        async () => {
          const s = await openSession(sshTransport({ ...base, agentCommand: 'exit 97', agentSocket }), 'box');
          await s.close();
        },
      );
      results.push(
        handshake,
        compare(openBridged, handshake),
        compare(openSource, handshake),
        compare(openSocket, handshake),
      );

      const t0 = performance.now();
      const rawBytes = await rawExec(raw, BULK_COMMAND);
      const rawMs = performance.now() - t0;
      if (rawBytes !== BULK_BYTES) throw new Error(`raw: received ${rawBytes} of ${BULK_BYTES} bytes`);
      const rawBulk = throughput(
        `raw: ${BULK_BYTES / 2 ** 20} MiB of output through an ssh2 channel`,
        rawBytes,
        rawMs,
      );
      const t1 = performance.now();
      const bytes = await invokeOutputBytes(session, BULK_COMMAND);
      const ms = performance.now() - t1;
      if (bytes !== BULK_BYTES) throw new Error(`invoke: received ${bytes} of ${BULK_BYTES} bytes`);
      results.push(
        rawBulk,
        throughput(`invoke: ${BULK_BYTES / 2 ** 20} MiB of output as records over SSH`, bytes, ms, rawBulk),
      );
      // The floor rows: what a bare Node process in the path costs, with and without a disk copy.
      const quoted = `'${BULK_COMMAND.replace(/'/g, `'\\''`)}'`;
      for (const [label, file] of [
        ['reference: bare Node relay on the remote (no disk)', '-'],
        ['reference: bare Node relay + sync spool file with CRC', join(stateDir, 'floor.seg')],
      ] as const) {
        const t = performance.now();
        const got = await rawExec(raw, `node ${floorPath} ${file} ${quoted}`);
        const took = performance.now() - t;
        if (got !== BULK_BYTES) throw new Error(`${label}: received ${got} of ${BULK_BYTES} bytes`);
        results.push(throughput(label, got, took, rawBulk));
      }
      await rm(join(stateDir, 'floor.seg'), { force: true });
      // The same output with stdout: 'bytes': chunks as read from the pipe, not one record a line.
      const t2 = performance.now();
      const raw2 = await invokeOutputBytes(session, BULK_COMMAND, 'bytes');
      const ms2 = performance.now() - t2;
      if (raw2 !== BULK_BYTES) throw new Error(`invoke --bytes: received ${raw2} of ${BULK_BYTES} bytes`);
      results.push(
        throughput(`invoke: ${BULK_BYTES / 2 ** 20} MiB of output as bytes over SSH`, raw2, ms2, rawBulk),
      );
      // Both again on a session opened straight to the agent's socket: no stdio bridge process.
      const direct = await openSession(
        sshTransport({ ...base, agentCommand: 'exit 97', agentSocket }),
        'box',
      );
      try {
        for (const mode of ['lines', 'bytes'] as const) {
          const t = performance.now();
          const got = await invokeOutputBytes(direct, BULK_COMMAND, mode);
          const took = performance.now() - t;
          if (got !== BULK_BYTES)
            throw new Error(`invoke (socket, ${mode}): received ${got} of ${BULK_BYTES}`);
          results.push(
            throughput(
              `invoke: ${BULK_BYTES / 2 ** 20} MiB as ${mode === 'lines' ? 'records' : 'bytes'}, agentSocket`,
              got,
              took,
              rawBulk,
            ),
          );
        }
      } finally {
        await direct.close();
      }
    } finally {
      raw.end();
      await session.close().catch(() => {});
    }

    // Fan-out of `hostname`: every contender makes its 20 connections afresh each time.
    const farmKey = await readFile(farm[0]!.clientKeyPath);
    const fixturesOfFarm = farm;
    const rawFan = await measure(`raw: ssh2 to ${FAN_OUT_HOSTS} hosts at once, exec hostname`, 5, () =>
      Promise.all(
        fixturesOfFarm.map(async (f) => {
          const client = await rawConnect(f, farmKey);
          await rawExec(client, 'hostname');
          client.end();
        }),
      ),
    );
    const xargs = await measure(`OpenSSH: xargs -P ${FAN_OUT_HOSTS} ssh <host> hostname`, 5, () =>
      run('sh', [
        '-c',
        `printf '%s\\n' ${farmAliases.join(' ')} | xargs -P ${FAN_OUT_HOSTS} -I{} ssh -F ${configFile} -o BatchMode=yes {} hostname`,
      ]),
    );
    const fan = await measure(`invokeMany: hostname on ${FAN_OUT_HOSTS} hosts (streamed)`, 5, async () => {
      const invocation = invokeMany(
        undefined,
        farmAliases,
        { definition: { command: 'hostname' } },
        {
          transport: sshTransport({ ...base, agentCommand: bridged }),
          sessionOptions: { handshakeTimeoutMs: 60_000 },
        },
      );
      let count = 0;
      for await (const record of invocation) if (record.stream === 'output') count++;
      if (count !== FAN_OUT_HOSTS) throw new Error(`fan-out: ${count} of ${FAN_OUT_HOSTS} hosts answered`);
    });
    const fanSocket = await measure(
      `invokeMany: hostname on ${FAN_OUT_HOSTS} hosts, agentSocket`,
      5,
      async () => {
        const invocation = invokeMany(
          undefined,
          farmAliases,
          { definition: { command: 'hostname' } },
          {
            transport: sshTransport({ ...base, agentCommand: bridged, agentSocket }),
            sessionOptions: { handshakeTimeoutMs: 60_000 },
          },
        );
        let count = 0;
        for await (const record of invocation) if (record.stream === 'output') count++;
        if (count !== FAN_OUT_HOSTS) throw new Error(`fan-out: ${count} of ${FAN_OUT_HOSTS} hosts answered`);
      },
    );
    results.push(
      rawFan,
      xargs,
      compare(fan, rawFan),
      compare(fan, xargs),
      compare(fanSocket, rawFan),
      compare(fanSocket, xargs),
    );
    return results;
  } finally {
    if (stateDir) await stopAgentIn(stateDir);
    await farm?.stopAll();
    for (const f of fixtures) await f.stop();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  }
}
