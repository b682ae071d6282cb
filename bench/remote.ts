/**
 * Remoting over the local agent's Unix socket: invoke round trip on an open session, and bulk
 * output through a session, each next to its raw baseline from the same run.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentServer, listenUnix } from '@rjob/agent';
import { openSession, unixSocketTransport } from '@rjob/core';
import { type BenchResult, compare, invokeOutputBytes, measure, throughput } from './harness.js';

const BULK_BYTES = 256 * 1024 * 1024;
// 1 KiB lines: the shape of real log output, and what the process job turns into records.
const BULK_COMMAND = `yes "$(head -c 1023 /dev/zero | tr '\\0' x)" | head -c ${BULK_BYTES}`;

function rawSpawn(command: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', command], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.resume();
    child.stderr.resume();
    child.once('error', reject);
    child.once('close', () => resolve());
  });
}

/** The command's stdout copied through a Unix socket to a reader that counts bytes. */
async function rawSocketCopy(dir: string, command: string): Promise<number> {
  const path = join(dir, 'raw.sock');
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(path, resolve));
  try {
    const counted = new Promise<number>((resolve) => {
      server.once('connection', (socket) => {
        let bytes = 0;
        socket.on('data', (chunk: Buffer) => (bytes += chunk.length));
        socket.on('end', () => resolve(bytes));
      });
    });
    const socket = createConnection(path);
    const child = spawn('/bin/sh', ['-c', command], { stdio: ['ignore', 'pipe', 'ignore'] });
    child.stdout.pipe(socket);
    return await counted;
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
}

async function rawSocketRoundTrip(dir: string, count: number): Promise<BenchResult> {
  const path = join(dir, 'echo.sock');
  const server = createServer((socket) => socket.pipe(socket));
  await new Promise<void>((resolve) => server.listen(path, resolve));
  const socket = createConnection(path);
  await new Promise((resolve) => socket.once('connect', resolve));
  try {
    return await measure('raw: Unix socket echo round trip', count, async () => {
      const answered = new Promise((resolve) => socket.once('data', resolve));
      socket.write('x');
      await answered;
    });
  } finally {
    socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
}

export async function benchRemote(): Promise<BenchResult[]> {
  const dir = await mkdtemp(join(tmpdir(), 'rjob-bench-remote-'));
  const server = new AgentServer({ stateDir: dir, defaultCwd: dir, computerName: 'bench' });
  const door = await listenUnix(server, { socketPath: join(dir, 'agent.sock') });
  const session = await openSession(unixSocketTransport, door.socketPath);
  const results: BenchResult[] = [];
  try {
    const invokeOnce = async () => {
      const invocation = session.invoke({ definition: { command: 'true' } });
      for await (const _ of invocation) {
        // drain
      }
      await invocation.result;
    };
    results.push(await rawSocketRoundTrip(dir, 2_000));
    const spawnTrue = await measure('raw: local spawn /bin/sh -c true → exit', 200, () => rawSpawn('true'));
    const invoke = await measure('invoke `true` on an open session (Unix socket) → end', 200, invokeOnce);
    results.push(spawnTrue, compare(invoke, spawnTrue));

    const t0 = performance.now();
    const rawBytes = await rawSocketCopy(dir, BULK_COMMAND);
    const rawMs = performance.now() - t0;
    const raw = throughput(
      `raw: ${BULK_BYTES / 2 ** 20} MiB of output copied through a Unix socket`,
      rawBytes,
      rawMs,
    );
    const t1 = performance.now();
    const bytes = await invokeOutputBytes(session, BULK_COMMAND);
    const ms = performance.now() - t1;
    if (bytes !== BULK_BYTES) throw new Error(`received ${bytes} of ${BULK_BYTES} bytes`);
    const t2 = performance.now();
    const chunks = await invokeOutputBytes(session, BULK_COMMAND, 'bytes');
    const ms2 = performance.now() - t2;
    if (chunks !== BULK_BYTES) throw new Error(`received ${chunks} of ${BULK_BYTES} bytes as chunks`);
    results.push(
      raw,
      throughput(
        `invoke: ${BULK_BYTES / 2 ** 20} MiB of output as records through the session`,
        bytes,
        ms,
        raw,
      ),
      throughput(
        `invoke: ${BULK_BYTES / 2 ** 20} MiB of output as bytes (stdout: 'bytes')`,
        chunks,
        ms2,
        raw,
      ),
    );
    return results;
  } finally {
    await session.close().catch(() => {});
    await door.close();
    await server.close();
    await rm(dir, { recursive: true, force: true });
  }
}
