// Done-when 4 of "RemoteJob over WebSocket": a session over wss:// through a TCP fault proxy on
// loopback survives a cut (FIN), a stall (nothing forwarded, nothing closed: only heartbeats can
// tell) and a reset (RST) in the middle of a 100,000-line job, and every line arrives exactly
// once, in order. Real agent, real `ws` listener, real TLS; the proxy forwards raw TCP.
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSession, type RjobError, type Session, type SessionState } from '@rjob/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type AgentProcess, spawnAgent } from './fixtures/spawn-agent.js';
import { type FaultProxy, type Stall, startFaultProxy } from './testing/fault-proxy.js';
import { wsTransport } from './ws-transport.js';

const TOKEN = 'fault-proxy-token-0123456789abcdef';
const LINES = 100_000;

async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 5));
}

let dir: string;
let agent: AgentProcess;
let proxy: FaultProxy;
let session: Session<string | URL> | undefined;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rjob-ws-fault-'));
  // The agent runs in its own process: a busy agent then cannot freeze the client's event loop
  // (and so its heartbeat clock), as it would if both shared one.
  agent = await spawnAgent(dir, TOKEN);
  proxy = await startFaultProxy({ target: { host: '127.0.0.1', port: agent.port } });
});

afterEach(async () => {
  await session?.close().catch(() => {});
  session = undefined;
  await proxy.close();
  await agent.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('fault proxy', () => {
  it('forwards, then cuts, resets and stalls raw TCP connections on command', async () => {
    // An echo target through the proxy: the proxy's own behaviour, without rjob on top.
    const { createServer } = await import('node:net');
    const echo = createServer((socket) => {
      socket.on('error', () => {}); // the reset reaches the echo server too
      socket.pipe(socket);
    });
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
    const target = echo.address() as { port: number };
    const raw = await startFaultProxy({ target: { host: '127.0.0.1', port: target.port } });
    const dial = async () => {
      const socket = createConnection({ host: raw.host, port: raw.port });
      await new Promise((resolve) => socket.once('connect', resolve));
      return socket;
    };
    const echoOnce = (socket: ReturnType<typeof createConnection>, text: string) =>
      new Promise<string>((resolve) => {
        socket.once('data', (chunk) => resolve(chunk.toString()));
        socket.write(text);
      });
    try {
      const a = await dial();
      expect(await echoOnce(a, 'one')).toBe('one');
      const aEnded = new Promise<boolean>((resolve) => a.once('close', (hadError) => resolve(hadError)));
      raw.cut();
      expect(await aEnded).toBe(false); // a FIN, not an error

      const b = await dial();
      expect(await echoOnce(b, 'two')).toBe('two');
      const bError = new Promise<string | undefined>((resolve) =>
        b.once('error', (error: NodeJS.ErrnoException) => resolve(error.code)),
      );
      raw.reset();
      expect(await bError).toBe('ECONNRESET');

      const c = await dial();
      expect(await echoOnce(c, 'three')).toBe('three');
      const stall = raw.stall();
      // While stalled nothing comes back; a connection made meanwhile is served. The ordering
      // proves it: d's echo arrives although c's request was written first.
      const cAnswer = echoOnce(c, 'held');
      let cAnswered = false;
      void cAnswer.then(() => (cAnswered = true));
      const d = await dial();
      expect(await echoOnce(d, 'four')).toBe('four');
      expect(cAnswered).toBe(false);
      stall.resume();
      expect(await cAnswer).toBe('held');
      const stall2 = raw.stall();
      const cClosed = new Promise((resolve) => c.once('close', resolve));
      stall2.cut();
      await cClosed;
      c.destroy();
      d.destroy();
    } finally {
      await raw.close();
      await new Promise((resolve) => echo.close(resolve));
    }
  });
});

describe('a wss session through the fault proxy', () => {
  it('delivers all 100,000 lines exactly once, in order, across a cut, a stall and a reset', async () => {
    const lines: string[] = [];
    const states: { state: SessionState; reason?: RjobError }[] = [];
    session = await openSession(
      // The transport's own ping is left at its default (30 s) so that the stall is noticed by
      // core's heartbeat, the mechanism every transport shares.
      wsTransport({ token: TOKEN }),
      agent.pinnedUrl.replace(`:${agent.port}`, `:${proxy.port}`),
      {
        computerName: 'server01',
        // Short heartbeats and backoff so a stall is found in seconds, not the default 30 s; not
        // shorter, so a loaded test machine does not drop healthy links as well.
        channel: { pingIntervalMs: 200, heartbeatTimeoutMs: 2_000 },
        initialBackoffMs: 10,
        maxBackoffMs: 100,
      },
    );
    session.onStateChange(({ state, reason }) => {
      states.push({ state, ...(reason ? { reason } : {}) });
    });
    const disconnects = () => states.filter((s) => s.state === 'Disconnected').length;
    /** Injects a fault and waits until the session has lost its link; returns why it was lost. */
    const inject = async (fault: () => void): Promise<string | undefined> => {
      // Records buffered before the previous fault can carry the stream to the next threshold
      // while the session is still resuming; a fault then would hit no live link. Wait for it.
      await until(() => session?.state === 'Opened');
      const before = states.length;
      fault();
      await until(() => states.slice(before).some((s) => s.state === 'Disconnected'));
      return states.slice(before).find((s) => s.state === 'Disconnected')?.reason?.code;
    };
    const seen: Record<string, string | undefined> = {};

    // Each fault is injected while the consumer holds a record mid-stream: the agent still has
    // the rest of the job to send, and some of it is in flight. The gate opens once the session
    // has seen the link die, so the fault really happened under the stream.
    type Fault = () => Promise<void>;
    const faults = new Map<number, Fault>([
      [
        20_000,
        async () => {
          seen.cut = await inject(() => proxy.cut());
        },
      ],
      [
        50_000,
        async () => {
          let stall: Stall | undefined;
          seen.stall = await inject(() => {
            stall = proxy.stall();
          });
          stall?.cut();
        },
      ],
      [
        80_000,
        async () => {
          seen.reset = await inject(() => proxy.reset());
        },
      ],
    ]);
    const invocation = session.invoke(
      { definition: { command: `seq ${LINES}` } },
      {
        onRecord: (record) => {
          lines.push(record.data as string);
          return faults.get(lines.length)?.();
        },
      },
    );
    const info = await invocation.result;

    expect(info.state).toBe('Completed');
    expect(lines.length).toBe(LINES);
    // Exactly once, in order: line i is i.
    const firstWrong = lines.findIndex((line, i) => line !== String(i + 1));
    expect(firstWrong).toBe(-1);

    // Every fault cost the link and the session resumed after each: at least one loss per fault
    // (a loaded machine may add a heartbeat loss of its own; nothing may be lost through it).
    expect(disconnects()).toBeGreaterThanOrEqual(3);
    expect(seen.cut).toBe('ERR_LINK_CLOSED');
    // The stall closed nothing: only the heartbeat could find the link dead.
    expect(seen.stall).toBe('ERR_HEARTBEAT_TIMEOUT');
    expect(seen.reset).toBeDefined();
    expect(session.state).toBe('Opened');
    // One connection for the open plus one per fault.
    expect(proxy.acceptedConnections).toBeGreaterThanOrEqual(4);
  });
});
