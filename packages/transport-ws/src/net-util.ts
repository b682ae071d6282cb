import { isIP } from 'node:net';
import { ErrorCode, RjobError } from '@rjob/core';

/** True for `localhost`, 127.0.0.0/8, ::1 and ::ffff:127.x (brackets allowed). */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  return h.startsWith('::ffff:127.');
}

/** Normalizes a SHA-256 fingerprint (hex, with or without colons, any case) to lowercase hex. */
export function normalizeFingerprint(pin: string): string {
  const hex = pin
    .trim()
    .replace(/^sha256[:=]/i, '')
    .replace(/:/g, '')
    .toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(hex)) {
    throw new RjobError(ErrorCode.InvalidArgument, 'A pin is a SHA-256 fingerprint: 64 hex digits.', {
      details: { pin },
    });
  }
  return hex;
}

/** `AB:CD:…` (Node's `fingerprint256`) as lowercase hex without colons. */
export function fingerprintHex(fingerprint256: string): string {
  return fingerprint256.replace(/:/g, '').toLowerCase();
}

/** Parses `ws://` / `wss://` URLs; the fragment is returned apart. */
export function parseWsUrl(target: string | URL): URL {
  let url: URL;
  try {
    url = new URL(String(target));
  } catch (error) {
    throw new RjobError(ErrorCode.InvalidArgument, `Not a URL: ${String(target)}`, { cause: error });
  }
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
    throw new RjobError(ErrorCode.InvalidArgument, `Expected a ws:// or wss:// URL, got ${url.protocol}`, {
      details: { target: String(target) },
    });
  }
  return url;
}
