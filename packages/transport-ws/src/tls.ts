/** The listener's certificate: given, or a self-signed P-256 pair generated once in the state dir. */
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmod, mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { RjobError } from '@rjob/core';
import { WsErrorCode } from './errors.js';
import { fingerprintHex } from './net-util.js';

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
 * Reads `<dir>/cert.pem` and `<dir>/key.pem`, generating them with openssl when missing (key 0600,
 * directory 0700). The pair is kept so the fingerprint clients pinned stays valid across restarts.
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
  const names = ['DNS:localhost', 'IP:127.0.0.1', 'IP:::1'];
  for (const host of hosts) {
    const h = host.replace(/^\[|\]$/g, '');
    const entry = /^[0-9.]+$/.test(h) || h.includes(':') ? `IP:${h}` : `DNS:${h}`;
    if (h && h !== '0.0.0.0' && h !== '::' && !names.includes(entry)) names.push(entry);
  }
  try {
    await promisify(execFile)('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-sha256',
      '-days',
      '3650',
      '-subj',
      '/CN=rjob-agent',
      '-addext',
      `subjectAltName=${names.join(',')}`,
      '-keyout',
      keyFile,
      '-out',
      certFile,
    ]);
    await chmod(keyFile, 0o600);
  } catch (error) {
    await rm(keyFile, { force: true });
    await rm(certFile, { force: true });
    throw new RjobError(
      WsErrorCode.ListenFailed,
      `Cannot generate a certificate with openssl: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
  const made = await read();
  if (!made) throw new RjobError(WsErrorCode.ListenFailed, `Generated certificate unreadable in ${dir}.`);
  return made;
}
