/**
 * Remoting over wss:// on loopback: invoke round trip on an open session and bulk output through
 * a session, each next to a raw baseline from the same run — a plain `ws` server and client over
 * the same TLS certificate, doing the same work with no rjob in between.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentServer } from '@rjob/agent';
import { openSession } from '@rjob/core';
import { createWsAuth, listenWs, selfSignedCertificate, wsTransport } from '@rjob/transport-ws';
import { WebSocket, WebSocketServer } from 'ws';
import { type BenchResult, compare, invokeOutputBytes, measure, throughput } from './harness.js';

const BULK_BYTES = 256 * 1024 * 1024;
// 1 KiB lines, as in bench/remote.ts: the shape of real log output.
const BULK_COMMAND = `yes "$(head -c 1023 /dev/zero | tr '\\0' x)" | head -c ${BULK_BYTES}`;
const TOKEN = 'bench-token-0123456789abcdef0123';
/** Raw server's send buffer bound: the same 4 MiB high-water mark the rjob link uses by default. */
const RAW_HIGH_WATER = 4 * 1024 * 1024;

/**
 * The baseline server: `run:CMD` spawns CMD and answers `exit` when it ends; `bulk:CMD` streams
 * CMD's stdout as binary messages (pausing above the high-water mark), then `end`.
 */
async function rawWsServer(cert: string, key: string): Promise<{ url: string; close(): Promise<void> }> {
  const https = createServer({ cert, key });
  const wss = new WebSocketServer({ server: https, perMessageDeflate: false });
  wss.on('connection', (ws) => {
    ws.on('message', (data) => {
      const text = data.toString();
      const [verb, command] = [text.slice(0, text.indexOf(':')), text.slice(text.indexOf(':') + 1)];
      const child = spawn('/bin/sh', ['-c', command], { stdio: ['ignore', 'pipe', 'ignore'] });
      if (verb === 'run') {
        child.stdout.resume();
        child.once('close', () => ws.send('exit'));
        return;
      }
      child.stdout.on('data', (chunk: Buffer) => {
        ws.send(chunk, { binary: true });
        if (ws.bufferedAmount > RAW_HIGH_WATER) {
          child.stdout.pause();
          const resume = (): void => {
            if (ws.bufferedAmount > RAW_HIGH_WATER / 4) setImmediate(resume);
            else child.stdout.resume();
          };
          setImmediate(resume);
        }
      });
      child.once('close', () => ws.send('end'));
    });
  });
  await new Promise<void>((resolve) => https.listen(0, '127.0.0.1', resolve));
  const { port } = https.address() as { port: number };
  return {
    url: `wss://127.0.0.1:${port}`,
    close: async () => {
      for (const client of wss.clients) client.terminate();
      wss.close();
      await new Promise((resolve) => https.close(resolve));
    },
  };
}

export async function benchWs(): Promise<BenchResult[]> {
  const dir = await mkdtemp(join(tmpdir(), 'rjob-bench-ws-'));
  const cert = await selfSignedCertificate(join(dir, 'tls'));
  const auth = await createWsAuth({ stateDir: dir, tokens: { [TOKEN]: 'bench' } });
  const server = new AgentServer({
    stateDir: dir,
    defaultCwd: dir,
    computerName: 'bench',
    authenticate: auth.authenticate,
  });
  const door = await listenWs(server, { listen: 'wss://127.0.0.1:0', cert: cert.cert, key: cert.key, auth });
  const session = await openSession(wsTransport({ token: TOKEN }), door.pinnedUrl);
  const raw = await rawWsServer(cert.cert, cert.key);
  const client = new WebSocket(raw.url, { ca: cert.cert, perMessageDeflate: false });
  await new Promise((resolve, reject) => {
    client.once('open', resolve);
    client.once('error', reject);
  });
  const results: BenchResult[] = [];
  try {
    const rawRun = await measure('raw: ws over TLS, spawn /bin/sh -c true, answer on exit', 200, async () => {
      const answered = new Promise((resolve) => client.once('message', resolve));
      client.send('run:true');
      await answered;
    });
    const invoke = await measure('invoke `true` on an open wss session → end', 200, async () => {
      const invocation = session.invoke({ definition: { command: 'true' } });
      for await (const _ of invocation) {
        // drain
      }
      await invocation.result;
    });
    results.push(rawRun, compare(invoke, rawRun));

    const t0 = performance.now();
    let rawBytes = 0;
    await new Promise<void>((resolve) => {
      const onMessage = (data: Buffer, isBinary: boolean): void => {
        if (isBinary) {
          rawBytes += data.length;
          return;
        }
        client.off('message', onMessage);
        resolve();
      };
      client.on('message', onMessage);
      client.send(`bulk:${BULK_COMMAND}`);
    });
    const rawMs = performance.now() - t0;
    if (rawBytes !== BULK_BYTES) throw new Error(`raw: received ${rawBytes} of ${BULK_BYTES} bytes`);
    const rawResult = throughput(
      `raw: ${BULK_BYTES / 2 ** 20} MiB of output as ws messages over TLS`,
      rawBytes,
      rawMs,
    );

    const t1 = performance.now();
    const bytes = await invokeOutputBytes(session, BULK_COMMAND);
    const ms = performance.now() - t1;
    if (bytes !== BULK_BYTES) throw new Error(`received ${bytes} of ${BULK_BYTES} bytes`);
    results.push(
      rawResult,
      throughput(
        `invoke: ${BULK_BYTES / 2 ** 20} MiB of output as records through a wss session`,
        bytes,
        ms,
        rawResult,
      ),
    );
    const t2 = performance.now();
    const chunks = await invokeOutputBytes(session, BULK_COMMAND, 'bytes');
    const ms2 = performance.now() - t2;
    if (chunks !== BULK_BYTES) throw new Error(`received ${chunks} of ${BULK_BYTES} bytes as chunks`);
    results.push(
      throughput(
        `invoke: ${BULK_BYTES / 2 ** 20} MiB of output as bytes through a wss session`,
        chunks,
        ms2,
        rawResult,
      ),
    );
    return results;
  } finally {
    client.terminate();
    await raw.close();
    await session.close().catch(() => {});
    await door.close();
    await server.close();
    await rm(dir, { recursive: true, force: true });
  }
}
