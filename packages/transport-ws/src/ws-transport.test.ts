// The WebSocket transport and listener, on loopback, with a real `ws` server and a real agent.
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentServer } from '@rjob/agent';
import { connectSession, openSession, RjobError, type Session, type TransportChannel } from '@rjob/core';
import { runTransportConformance } from '@rjob/core/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { createWsAuth, type WsAuth } from './auth.js';
import { listenWs, type WsListener } from './listener.js';
import { selfSignedCertificate } from './tls.js';
import { channelFromWebSocket } from './ws-channel.js';
import { wsTransport } from './ws-transport.js';

const TOKEN_A = 'token-of-alice-0123456789abcdef';
const TOKEN_B = 'token-of-bob-0123456789abcdef00';

let certDir: string;
let cert: { cert: string; key: string; fingerprint: string };

beforeAll(async () => {
  certDir = await mkdtemp(join(tmpdir(), 'rjob-ws-cert-'));
  cert = await selfSignedCertificate(certDir);
});
afterAll(async () => {
  await rm(certDir, { recursive: true, force: true });
});

/** Conformance: the listener side is a bare door that hands its links to the test. */
runTransportConformance(
  async ({ maxFrameBytes }) => {
    const dir = await mkdtemp(join(tmpdir(), 'rjob-ws-conf-'));
    let accept!: (link: TransportChannel) => void;
    const accepted = new Promise<TransportChannel>((resolve) => (accept = resolve));
    const door = await listenWs(
      { stateDir: dir, attach: async (link) => accept(link) },
      {
        listen: 'wss://127.0.0.1:0',
        cert: cert.cert,
        key: cert.key,
        maxFrameBytes,
        auth: await createWsAuth({ stateDir: dir, tokens: { [TOKEN_A]: 'alice' } }),
      },
    );
    const client = await wsTransport({ token: TOKEN_A }).connect(door.pinnedUrl, { maxFrameBytes });
    const server = await accepted;
    return {
      client,
      server,
      dispose: async () => {
        await door.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  },
  { name: 'wss transport conformance', test: { describe, it } },
);

describe('wss to a real agent', () => {
  let dir: string;
  let agent: AgentServer;
  let door: WsListener;
  let auth: WsAuth;
  const sessions: Session<string | URL>[] = [];
  const errors: unknown[] = [];

  const start = async (listen = 'wss://127.0.0.1:0'): Promise<void> => {
    dir = await mkdtemp(join(tmpdir(), 'rjob-ws-agent-'));
    auth = await createWsAuth({ stateDir: dir, tokens: { [TOKEN_A]: 'alice', [TOKEN_B]: 'bob' } });
    agent = new AgentServer({
      stateDir: dir,
      defaultCwd: dir,
      computerName: 'server01',
      authenticate: auth.authenticate,
    });
    door = await listenWs(agent, {
      listen,
      auth,
      failureDelayMs: 5,
      upgradeTimeoutMs: 300,
      maxFrameBytes: 64 * 1024,
      onLinkError: (error) => errors.push(error),
    });
  };
  const open = async (token: string, options: { pin?: string } = {}) => {
    const session = await openSession(wsTransport({ token, ...options }), door.pinnedUrl, {
      computerName: 'server01',
    });
    sessions.push(session);
    return session;
  };
  const refusal = async (promise: Promise<unknown>): Promise<string> => {
    const error = await promise.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(RjobError.is(error)).toBe(true);
    const e = error as RjobError;
    return RjobError.is(e.cause) ? `${e.code}/${e.cause.code}` : e.code;
  };

  afterEach(async () => {
    errors.length = 0;
    for (const session of sessions.splice(0)) await session.close().catch(() => {});
    await door?.close();
    await agent?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('S4 over wss: a job keeps its results on the agent, received --keep twice', async () => {
    await start();
    const session = await open(TOKEN_A);
    await session.jobs.start({ definition: { command: 'echo a.conf; echo b.conf' } }, { name: 'audit' });
    await session.jobs.wait('audit');
    const first = await session.jobs.receive('audit', { keep: true });
    const second = await session.jobs.receive('audit', { keep: true });
    expect(first.map((r) => r.data)).toEqual(['a.conf', 'b.conf']);
    expect(second.map((r) => r.data)).toEqual(['a.conf', 'b.conf']);
    expect(agent.sessions('alice').map((s) => s.sessionId)).toEqual([session.sessionId]);
  });

  it('refuses a wrong token, no token, a wrong pin and ws:// to a non-loopback host, each coded', async () => {
    await start();
    expect(await refusal(wsTransport({ token: 'wrong-token-0123456789' }).connect(door.pinnedUrl))).toBe(
      'ERR_UNAUTHORIZED',
    );
    expect(await refusal(wsTransport({}).connect(door.pinnedUrl))).toBe('ERR_UNAUTHORIZED');
    expect(await refusal(openSession(wsTransport({ token: 'nope-nope-nope-nope' }), door.pinnedUrl))).toBe(
      'ERR_UNAUTHORIZED',
    );
    const wrongPin = 'ab'.repeat(32);
    expect(await refusal(wsTransport({ token: TOKEN_A, pin: wrongPin }).connect(door.url))).toBe(
      'ERR_WS_PIN_MISMATCH',
    );
    expect(await refusal(wsTransport({ token: TOKEN_A }).connect(`${door.url}#sha256=${wrongPin}`))).toBe(
      'ERR_WS_PIN_MISMATCH',
    );
    // No pin and no CA: the self-signed certificate is refused by ordinary verification.
    expect(await refusal(wsTransport({ token: TOKEN_A }).connect(door.url))).toBe('ERR_WS_UNREACHABLE');
    expect(await refusal(wsTransport({ token: TOKEN_A }).connect('ws://agent.example.com:1'))).toBe(
      'ERR_WS_INSECURE',
    );
    await expect(listenWs(agent, { listen: 'ws://0.0.0.0:0' })).rejects.toMatchObject({
      code: 'ERR_WS_INSECURE',
    });
    // The agent still serves a valid client.
    const session = await open(TOKEN_A);
    expect(session.state).toBe('Opened');
  });

  it('drops a connection that never completes its upgrade', async () => {
    await start();
    const { connect } = await import('node:tls');
    const socket = connect({ host: '127.0.0.1', port: door.port, rejectUnauthorized: false });
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => {});
    await closed; // upgradeTimeoutMs is 300 ms here
  });

  it('isolates identities: B can neither list nor resume A’s sessions', async () => {
    await start();
    const alice = await open(TOKEN_A);
    const bob = await open(TOKEN_B);
    const seenByBob = await bob.list();
    expect(seenByBob.map((s) => s.sessionId)).not.toContain(alice.sessionId);
    expect((await alice.list()).map((s) => s.sessionId)).toContain(alice.sessionId);
    expect(agent.sessions('alice').map((s) => s.sessionId)).toEqual([alice.sessionId]);
    expect(agent.sessions('bob').map((s) => s.sessionId)).toEqual([bob.sessionId]);
    // Bob holding Alice's id and secret still cannot take her session: identity is checked too.
    const stolen = connectSession(wsTransport({ token: TOKEN_B }), door.pinnedUrl, {
      sessionId: alice.sessionId!,
      resumeSecret: alice.resumeSecret!,
      autoReconnect: false,
    });
    expect(await refusal(stolen)).toBe('ERR_SESSION_NOT_FOUND');
    expect(alice.state).toBe('Opened');
  });

  it('an oversized frame closes only that connection', async () => {
    await start();
    const session = await open(TOKEN_A);
    const raw = new WebSocket(door.url, {
      ca: cert.cert,
      rejectUnauthorized: false,
      headers: { authorization: `Bearer ${TOKEN_B}` },
      perMessageDeflate: false,
    });
    await new Promise((resolve, reject) => {
      raw.once('open', resolve);
      raw.once('error', reject);
    });
    const code = new Promise<number>((resolve) => raw.once('close', (c) => resolve(c)));
    raw.send(new Uint8Array(64 * 1024 + 1));
    expect(await code).toBe(1009);
    while (!errors.some((e) => RjobError.hasCode(e, 'ERR_FRAME_TOO_LARGE'))) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await session.jobs.start({ definition: { command: 'echo still' } }, { name: 'after' });
    await session.jobs.wait('after');
    expect((await session.jobs.receive('after')).map((r) => r.data)).toEqual(['still']);
  });
});

describe('wss link details', () => {
  it('malformed messages (text, undecodable) close only that connection, with a coded reason', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'rjob-ws-bad-'));
    const agent = new AgentServer({ stateDir: dir, defaultCwd: dir, persist: false });
    const errors: unknown[] = [];
    const door = await listenWs(agent, {
      listen: 'ws://127.0.0.1:0',
      onLinkError: (error) => errors.push(error),
    });
    try {
      const token = (await readFile(door.auth.tokenFile!, 'utf8')).trim();
      const rawClient = async (send: (ws: WebSocket) => void): Promise<number> => {
        const ws = new WebSocket(door.url, { headers: { authorization: `Bearer ${token}` } });
        await new Promise((resolve, reject) => {
          ws.once('open', resolve);
          ws.once('error', reject);
        });
        const code = new Promise<number>((resolve) => ws.once('close', (c) => resolve(c)));
        send(ws);
        return code;
      };
      expect(await rawClient((ws) => ws.send('hello as text'))).toBe(4000);
      expect(await rawClient((ws) => ws.send(new Uint8Array([0xff, 0x00, 0x13])))).toBeGreaterThanOrEqual(
        1000,
      );
      const codes = errors.map((e) => (e as RjobError).code);
      expect(codes).toContain('ERR_FRAME_MALFORMED');
      expect(codes.length).toBe(2);
      const session = await openSession(wsTransport({ token }), door.url);
      expect(session.state).toBe('Opened');
      await session.close();
    } finally {
      await door.close();
      await agent.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('cuts a peer that stops answering pings with ERR_WS_HEARTBEAT_TIMEOUT', async () => {
    const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise((resolve) => server.once('listening', resolve));
    try {
      const accepted = new Promise<WebSocket>((resolve) => server.once('connection', resolve));
      const { port } = server.address() as { port: number };
      const mute = new WebSocket(`ws://127.0.0.1:${port}`, { autoPong: false });
      mute.on('error', () => {});
      const link = channelFromWebSocket(await accepted, { heartbeatMs: 20 });
      const reason = await new Promise<RjobError>((resolve) => link.onClose(resolve));
      expect(reason.code).toBe('ERR_WS_HEARTBEAT_TIMEOUT');
      mute.terminate();
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('generated credentials', () => {
  it('creates a 0600 token file once and a stable self-signed certificate', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'rjob-ws-gen-'));
    try {
      const first = await createWsAuth({ stateDir: dir, identity: 'me' });
      const second = await createWsAuth({ stateDir: dir, identity: 'me' });
      expect(first.tokenFile).toBe(join(dir, 'ws-token'));
      expect((await stat(first.tokenFile!)).mode & 0o777).toBe(0o600);
      const token = (await readFile(first.tokenFile!, 'utf8')).trim();
      expect(second.identify(token)).toBe('me');
      expect(first.identify('x'.repeat(token.length))).toBeUndefined();
      const a = await selfSignedCertificate(join(dir, 'tls'));
      const b = await selfSignedCertificate(join(dir, 'tls'));
      expect(a.fingerprint).toMatch(/^[0-9a-f]{64}$/);
      expect(b.fingerprint).toBe(a.fingerprint);
      expect((await stat(join(dir, 'tls', 'key.pem'))).mode & 0o777).toBe(0o600);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
