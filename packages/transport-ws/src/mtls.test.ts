// Optional mutual TLS: a listener given `clientCa` accepts only clients whose certificate chains to
// it (and still wants the token); everything else is refused with a coded, permanent error.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { AgentServer } from '@rjob/agent';
import { isPermanentConnectError, openSession, RjobError } from '@rjob/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWsAuth } from './auth.js';
import { listenWs, type WsListener } from './listener.js';
import { selfSignedCertificate } from './tls.js';
import { wsTransport } from './ws-transport.js';

const TOKEN = 'mtls-token-0123456789abcdef0123';
const openssl = (...args: string[]) => promisify(execFile)('openssl', args);

let dir: string;
let agent: AgentServer;
let door: WsListener;
let ca: string;
let client: { cert: string; key: string };
let stranger: { cert: string; key: string };

/** A client key and certificate signed by the test CA. */
async function issueClientCertificate(): Promise<{ cert: string; key: string }> {
  const key = join(dir, 'client.key');
  const csr = join(dir, 'client.csr');
  const cert = join(dir, 'client.pem');
  await openssl(
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-subj',
    '/CN=alice',
    '-keyout',
    key,
    '-out',
    csr,
  );
  await openssl(
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    join(dir, 'ca', 'cert.pem'),
    '-CAkey',
    join(dir, 'ca', 'key.pem'),
    '-CAcreateserial',
    '-days',
    '1',
    '-out',
    cert,
  );
  return { cert: await readFile(cert, 'utf8'), key: await readFile(key, 'utf8') };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rjob-ws-mtls-'));
  // A self-signed certificate doubles as a CA: openssl's req -x509 marks it CA:TRUE.
  ca = (await selfSignedCertificate(join(dir, 'ca'))).cert;
  client = await issueClientCertificate();
  const other = await selfSignedCertificate(join(dir, 'stranger'));
  stranger = { cert: other.cert, key: other.key };
  const auth = await createWsAuth({ stateDir: dir, tokens: { [TOKEN]: 'alice' } });
  agent = new AgentServer({ stateDir: dir, defaultCwd: dir, authenticate: auth.authenticate });
  door = await listenWs(agent, { listen: 'wss://127.0.0.1:0', auth, clientCa: ca, failureDelayMs: 5 });
});

afterAll(async () => {
  await door?.close();
  await agent?.close();
  await rm(dir, { recursive: true, force: true });
});

const failure = async (promise: Promise<unknown>): Promise<RjobError> => {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(RjobError.is(error)).toBe(true);
  return error as RjobError;
};

describe('mutual TLS', () => {
  it('serves a client whose certificate the CA signed', async () => {
    const session = await openSession(wsTransport({ token: TOKEN, ...client }), door.pinnedUrl);
    try {
      const lines: unknown[] = [];
      for await (const record of session.invoke({ definition: { command: 'echo mutual' } })) {
        lines.push(record.data);
      }
      expect(lines).toEqual(['mutual']);
    } finally {
      await session.close();
    }
  });

  it('refuses a client without a certificate: ERR_WS_CLIENT_CERT_REFUSED, permanent', async () => {
    const error = await failure(wsTransport({ token: TOKEN }).connect(door.pinnedUrl));
    expect(error.code).toBe('ERR_WS_CLIENT_CERT_REFUSED');
    expect(isPermanentConnectError(error)).toBe(true);
  });

  it('refuses a certificate from another CA during TLS', async () => {
    // Node's server drops such a connection after the handshake without a TLS alert, so the
    // client only sees the connection reset: refused, but not distinguishable from a network
    // failure on the client side.
    const error = await failure(wsTransport({ token: TOKEN, ...stranger }).connect(door.pinnedUrl));
    expect(['ERR_WS_CLIENT_CERT_REFUSED', 'ERR_WS_UNREACHABLE']).toContain(error.code);
  });

  it('still wants the token with a good certificate', async () => {
    const error = await failure(
      wsTransport({ token: 'not-the-token-0123456789', ...client }).connect(door.pinnedUrl),
    );
    expect(error.code).toBe('ERR_UNAUTHORIZED');
  });

  it('is wss:// only', async () => {
    const error = await failure(listenWs(agent, { listen: 'ws://127.0.0.1:0', clientCa: ca }));
    expect(error.code).toBe('ERR_INVALID_ARGUMENT');
  });
});
