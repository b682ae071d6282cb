/** The JavaScript certificate writer: node's own X.509 parser and TLS stack accept what it makes. */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { selfSignedCertificate } from './tls.js';
import { generateSelfSigned, ipBytes } from './x509.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

describe('self-signed certificates without openssl', () => {
  it('parses as X.509 v3 with the names, the key and a valid self-signature', () => {
    const { cert, key } = generateSelfSigned({
      commonName: 'rjob-agent',
      names: ['localhost', 'agent.example', '127.0.0.1', '::1', '2001:db8::7'],
      days: 3650,
    });
    const x509 = new X509Certificate(cert);
    expect(x509.subject).toBe('CN=rjob-agent');
    expect(x509.issuer).toBe('CN=rjob-agent');
    expect(x509.ca).toBe(true);
    expect(x509.subjectAltName).toBe(
      'DNS:localhost, DNS:agent.example, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, IP Address:2001:DB8:0:0:0:0:0:7',
    );
    expect(x509.checkHost('agent.example')).toBe('agent.example');
    expect(x509.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(x509.verify(x509.publicKey)).toBe(true);
    expect(x509.checkPrivateKey(createPrivateKey(key))).toBe(true);
    const days = (Date.parse(x509.validTo) - Date.parse(x509.validFrom)) / 86_400_000;
    expect(days).toBe(3650);
  });

  it('writes IPv6 addresses in full, including an embedded IPv4 tail', () => {
    expect(ipBytes('::1')!.toString('hex')).toBe('00000000000000000000000000000001');
    expect(ipBytes('fe80::1:2')!.toString('hex')).toBe('fe800000000000000000000000010002');
    expect(ipBytes('::ffff:10.0.0.1')!.toString('hex')).toBe('00000000000000000000ffff0a000001');
    expect(ipBytes('10.1.2.3')!.toString('hex')).toBe('0a010203');
    expect(ipBytes('host.example')).toBeUndefined();
  });

  it('serves TLS that a client trusting the certificate verifies, host name included', async () => {
    const { cert, key } = generateSelfSigned({
      commonName: 'rjob-agent',
      names: ['localhost', '127.0.0.1'],
      days: 1,
    });
    const server = createServer({ cert, key }, (socket) => socket.end('ok'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as { port: number };
      const reply = await new Promise<string>((resolve, reject) => {
        const socket = connect({ host: '127.0.0.1', port, ca: cert, servername: 'localhost' }, () => {
          let text = '';
          socket.on('data', (chunk) => (text += chunk));
          socket.on('end', () => resolve(text));
        });
        socket.once('error', reject);
      });
      expect(reply).toBe('ok');
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('selfSignedCertificate keeps the pair in the directory: key 0600, same fingerprint next time', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'rjob-x509-'));
    dirs.push(dir);
    const first = await selfSignedCertificate(join(dir, 'tls'), ['10.9.8.7']);
    expect((await stat(join(dir, 'tls', 'key.pem'))).mode & 0o777).toBe(0o600);
    expect(new X509Certificate(first.cert).checkIP('10.9.8.7')).toBe('10.9.8.7');
    const again = await selfSignedCertificate(join(dir, 'tls'));
    expect(again.fingerprint).toBe(first.fingerprint);
  });
});
