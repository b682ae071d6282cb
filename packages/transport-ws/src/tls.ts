/** The listener's certificate: given, or a self-signed P-256 pair generated once in the state dir. */
import { X509Certificate } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { RjobError } from '@rjob/core';
import { WsErrorCode } from './errors.js';
import { fingerprintHex } from './net-util.js';
import { generateSelfSigned } from './x509.js';

export interface CertificatePair {
  cert: string;
  key: string;
  /** SHA-256 fingerprint of `cert`, lowercase hex: what clients pin. */
  fingerprint: string;
}

/** Lowercase hex SHA-256 fingerprint of a PEM certificate. */
export function certificateFingerprint(certPem: string | Buffer): string {
  return fingerprintHex(new X509Certificate(certPem).fingerprint256);
}

/**
 * Reads `<dir>/cert.pem` and `<dir>/key.pem`, generating them when missing (key 0600, directory
 * 0700), in JavaScript: no `openssl` binary is needed. The pair is kept so the fingerprint clients pinned stays valid across restarts.
 */
export async function selfSignedCertificate(dir: string, hosts: string[] = []): Promise<CertificatePair> {
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  const read = async (): Promise<CertificatePair | undefined> => {
    try {
      const [cert, key] = await Promise.all([readFile(certFile, 'utf8'), readFile(keyFile, 'utf8')]);
      return { cert, key, fingerprint: certificateFingerprint(cert) };
    } catch {
      return undefined;
    }
  };
  const existing = await read();
  if (existing) return existing;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const names = ['localhost', '127.0.0.1', '::1'];
  for (const host of hosts) {
    const h = host.replace(/^\[|\]$/g, '');
    if (h && h !== '0.0.0.0' && h !== '::' && !names.includes(h)) names.push(h);
  }
  try {
    const made = generateSelfSigned({ commonName: 'rjob-agent', names, days: 3650 });
    // Key first, each through a temp name: a reader never sees a certificate without its key.
    await writeFile(`${keyFile}.tmp`, made.key, { mode: 0o600 });
    await rename(`${keyFile}.tmp`, keyFile);
    await writeFile(`${certFile}.tmp`, made.cert, { mode: 0o644 });
    await rename(`${certFile}.tmp`, certFile);
  } catch (error) {
    await rm(keyFile, { force: true });
    await rm(certFile, { force: true });
    throw new RjobError(
      WsErrorCode.ListenFailed,
      `Cannot write a certificate in ${dir}: ${(error as Error).message}`,
      { cause: error },
    );
  }
  const made = await read();
  if (!made) throw new RjobError(WsErrorCode.ListenFailed, `Generated certificate unreadable in ${dir}.`);
  return made;
}
