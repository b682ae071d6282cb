// Done-when 2 of "RemoteJob over WebSocket": abuse of the listener. A thousand wrong tokens neither
// crash the agent nor hold back a valid client; every kind of refusal comes back coded, and the
// refusals a retry cannot fix are marked permanent so automatic reconnecting stops at them.
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentServer } from '@rjob/agent';
import { connectSession, isPermanentConnectError, openSession, RjobError } from '@rjob/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createWsAuth, type WsAuth } from './auth.js';
import { listenWs, type WsListener } from './listener.js';
import { wsTransport } from './ws-transport.js';

const TOKEN = 'refusals-token-0123456789abcdef';

let dir: string;
let agent: AgentServer;
let door: WsListener;
/** Upgrade requests whose token the listener has checked: the real auth, counted. */
let checked = 0;

async function start(failureDelayMs: number, upgradeTimeoutMs = 10_000): Promise<void> {
  const real = await createWsAuth({ stateDir: dir, tokens: { [TOKEN]: 'alice' } });
  const counted: WsAuth = {
    ...real,
    identify(token) {
      checked++;
      return real.identify(token);
    },
  };
  agent = new AgentServer({ stateDir: dir, defaultCwd: dir, authenticate: real.authenticate });
  door = await listenWs(agent, {
    listen: 'wss://127.0.0.1:0',
    auth: counted,
    failureDelayMs,
    upgradeTimeoutMs,
  });
}

async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 10));
}

const failure = (promise: Promise<unknown>): Promise<RjobError> =>
  promise.then(
    () => {
      throw new Error('expected a refusal');
    },
    (error: unknown) => {
      expect(RjobError.is(error)).toBe(true);
      return error as RjobError;
    },
  );

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rjob-ws-refusals-'));
  checked = 0;
});

afterEach(async () => {
  await door?.close();
  await agent?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('wrong tokens in bulk', () => {
  it('1,000 wrong-token attempts: the valid client is served while they all wait out the fixed delay', async () => {
    // The delay only has to outlast the valid client's open and job; the point is the order.
    // It runs from each attempt's token check, and the valid client starts only after the last
    // check, so it must also cover the spread of 1,000 TLS handshakes on a loaded machine (a few
    // seconds). The listener's upgrade deadline and the clients' handshake timeout exceed it.
    await start(20_000, 60_000);
    const ATTEMPTS = 1_000;
    let refused = 0;
    const attempts = Array.from({ length: ATTEMPTS }, (_, i) =>
      failure(
        wsTransport({ token: `wrong-token-${i}-0123456789`, handshakeTimeoutMs: 60_000 }).connect(
          door.pinnedUrl,
          {
            maxFrameBytes: 1 << 20,
          },
        ),
      ).then((error) => {
        refused++;
        return error;
      }),
    );
    // Every attempt has reached the token check, so every one is now inside its failure delay.
    await until(() => checked >= ATTEMPTS);

    const session = await openSession(wsTransport({ token: TOKEN }), door.pinnedUrl);
    try {
      const invocation = session.invoke({ definition: { command: 'echo served' } });
      const lines: unknown[] = [];
      for await (const record of invocation) lines.push(record.data);
      expect(lines).toEqual(['served']);
      // Not one refusal has been answered yet: the valid client did not queue behind the bad
      // ones, and their delays run side by side rather than one after another.
      expect(refused).toBe(0);
      expect(checked).toBe(ATTEMPTS + 1);
    } finally {
      await session.close();
    }

    const errors = await Promise.all(attempts);
    expect(new Set(errors.map((e) => e.code))).toEqual(new Set(['ERR_UNAUTHORIZED']));
    expect(errors.every((e) => isPermanentConnectError(e))).toBe(true);
    // Still serving after all of that.
    const again = await openSession(wsTransport({ token: TOKEN }), door.pinnedUrl);
    expect(again.state).toBe('Opened');
    await again.close();
  });
});

describe('each refusal is coded', () => {
  beforeEach(() => start(5));

  it('wrong token and no token: ERR_UNAUTHORIZED, permanent; a session with them never opens', async () => {
    const wrong = await failure(wsTransport({ token: 'not-the-token-0123456789' }).connect(door.pinnedUrl));
    expect(wrong.code).toBe('ERR_UNAUTHORIZED');
    expect(isPermanentConnectError(wrong)).toBe(true);
    const none = await failure(wsTransport({}).connect(door.pinnedUrl));
    expect(none.code).toBe('ERR_UNAUTHORIZED');
    expect(isPermanentConnectError(none)).toBe(true);
    const resumed = await failure(
      connectSession(wsTransport({ token: 'not-the-token-0123456789' }), door.pinnedUrl, {
        sessionId: 'x',
        resumeSecret: 'y',
      }),
    );
    expect(resumed.code).toBe('ERR_UNAUTHORIZED');
  });

  it('wrong pin: ERR_WS_PIN_MISMATCH, permanent, before the token is sent', async () => {
    const error = await failure(wsTransport({ token: TOKEN, pin: 'cd'.repeat(32) }).connect(door.url));
    expect(error.code).toBe('ERR_WS_PIN_MISMATCH');
    expect(isPermanentConnectError(error)).toBe(true);
    // The TLS handshake ended the attempt: the listener never saw an upgrade, so no token left.
    expect(checked).toBe(0);
  });

  it('a pinned session whose agent changes certificate stops reconnecting: permanent, stays Disconnected', async () => {
    const session = await openSession(wsTransport({ token: TOKEN }), door.pinnedUrl, {
      initialBackoffMs: 10,
      maxBackoffMs: 50,
    });
    try {
      // The same address now serves another certificate (an impostor, or a re-keyed agent).
      const port = door.port;
      await door.close();
      const otherDir = await mkdtemp(join(tmpdir(), 'rjob-ws-other-'));
      try {
        const { selfSignedCertificate } = await import('./tls.js');
        const other = await selfSignedCertificate(otherDir);
        door = await listenWs(agent, {
          listen: `wss://127.0.0.1:${port}`,
          cert: other.cert,
          key: other.key,
          auth: await createWsAuth({ stateDir: dir, tokens: { [TOKEN]: 'alice' } }),
        });
        await until(() => session.state === 'Disconnected' && !session.reconnecting);
        expect(session.reason?.code).toBe('ERR_WS_PIN_MISMATCH');
      } finally {
        await rm(otherDir, { recursive: true, force: true });
      }
    } finally {
      await session.close();
    }
  });

  it('a handshake that never completes: ERR_WS_HANDSHAKE_TIMEOUT, pinned or not', async () => {
    // Accepts TCP and then says nothing: no TLS, no HTTP.
    const silent = new Set<Socket>();
    const server = createServer((socket) => {
      silent.add(socket);
      socket.on('error', () => {});
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    try {
      const options = { token: TOKEN, handshakeTimeoutMs: 200 };
      const pinned = await failure(
        wsTransport({ ...options, pin: 'ab'.repeat(32) }).connect(`wss://127.0.0.1:${port}`),
      );
      expect(pinned.code).toBe('ERR_WS_HANDSHAKE_TIMEOUT');
      const unpinned = await failure(wsTransport(options).connect(`wss://127.0.0.1:${port}`));
      expect(unpinned.code).toBe('ERR_WS_HANDSHAKE_TIMEOUT');
      const plain = await failure(wsTransport(options).connect(`ws://127.0.0.1:${port}`));
      expect(plain.code).toBe('ERR_WS_HANDSHAKE_TIMEOUT');
    } finally {
      for (const socket of silent) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('plain ws:// off loopback without the flag: ERR_WS_INSECURE on both ends, permanent', async () => {
    const client = await failure(wsTransport({ token: TOKEN }).connect('ws://192.0.2.1:7443'));
    expect(client.code).toBe('ERR_WS_INSECURE');
    expect(isPermanentConnectError(client)).toBe(true);
    const server = await failure(listenWs(agent, { listen: 'ws://192.0.2.1:0' }));
    expect(server.code).toBe('ERR_WS_INSECURE');
  });
});
