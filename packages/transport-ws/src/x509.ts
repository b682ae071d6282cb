/**
 * A self-signed X.509 v3 certificate made with node:crypto alone, so `rjob agent --listen wss://`
 * works where the `openssl` binary is missing (docs/decisions.md, "Certificates without openssl").
 *
 * node:crypto makes the P-256 key, exports its SubjectPublicKeyInfo and signs; what it lacks is the
 * certificate's DER encoding, written here: a handful of ASN.1 types (SEQUENCE, SET, INTEGER, OID,
 * strings, times, BIT and OCTET STRING, context tags), enough for one certificate shape.
 */
import { createHash, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';

export interface SelfSignedOptions {
  /** Subject and issuer common name. */
  commonName: string;
  /** subjectAltName entries: host names and IPv4/IPv6 addresses. */
  names: string[];
  /** Validity from now. */
  days: number;
}

export interface GeneratedCertificate {
  /** PEM `CERTIFICATE`. */
  cert: string;
  /** PEM PKCS#8 `PRIVATE KEY`. */
  key: string;
}

// --- DER ---------------------------------------------------------------------------------------

function length(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** One TLV: tag byte, DER length, contents. */
function tlv(tag: number, ...contents: Buffer[]): Buffer {
  const body = Buffer.concat(contents);
  return Buffer.concat([Buffer.from([tag]), length(body.length), body]);
}

const sequence = (...items: Buffer[]): Buffer => tlv(0x30, ...items);
const set = (...items: Buffer[]): Buffer => tlv(0x31, ...items);
/** `[n] EXPLICIT`: a constructed context tag around one value. */
const explicit = (n: number, value: Buffer): Buffer => tlv(0xa0 | n, value);
const octetString = (bytes: Buffer): Buffer => tlv(0x04, bytes);
const utf8String = (text: string): Buffer => tlv(0x0c, Buffer.from(text, 'utf8'));
const boolean = (value: boolean): Buffer => tlv(0x01, Buffer.from([value ? 0xff : 0]));
/** A BIT STRING of whole bytes (no unused bits). */
const bitString = (bytes: Buffer): Buffer => tlv(0x03, Buffer.from([0]), bytes);

/** A non-negative INTEGER from big-endian bytes: leading zeros trimmed, a 0 added if the top bit is set. */
function unsignedInteger(bytes: Buffer): Buffer {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  let body = bytes.subarray(start);
  if (body[0]! & 0x80) body = Buffer.concat([Buffer.from([0]), body]);
  return tlv(0x02, body);
}

function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const out: number[] = [40 * parts[0]! + parts[1]!];
  for (const part of parts.slice(2)) {
    const base128: number[] = [part & 0x7f];
    for (let v = Math.floor(part / 128); v > 0; v = Math.floor(v / 128)) base128.unshift(0x80 | (v & 0x7f));
    out.push(...base128);
  }
  return tlv(0x06, Buffer.from(out));
}

/** RFC 5280: UTCTime through 2049, GeneralizedTime from 2050, both in UTC to the second. */
function time(date: Date): Buffer {
  const iso = date.toISOString(); // 2026-01-02T03:04:05.678Z
  const digits = iso.slice(0, 19).replace(/[-T:]/g, ''); // 20260102030405
  return date.getUTCFullYear() < 2050
    ? tlv(0x17, Buffer.from(`${digits.slice(2)}Z`, 'ascii'))
    : tlv(0x18, Buffer.from(`${digits}Z`, 'ascii'));
}

// --- certificate -------------------------------------------------------------------------------

const OID_ECDSA_WITH_SHA256 = '1.2.840.10045.4.3.2';
const OID_COMMON_NAME = '2.5.4.3';
const OID_SUBJECT_KEY_IDENTIFIER = '2.5.29.14';
const OID_SUBJECT_ALT_NAME = '2.5.29.17';
const OID_BASIC_CONSTRAINTS = '2.5.29.19';

/** The 4 or 16 bytes of an IP address, or undefined for a host name. */
export function ipBytes(address: string): Buffer | undefined {
  if (isIPv4(address)) return Buffer.from(address.split('.').map(Number));
  if (!isIPv6(address)) return undefined;
  let text = address;
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hex groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const b = v4[1]!.split('.').map(Number);
    text = `${text.slice(0, -v4[1]!.length)}${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const [head, tail] = text.split('::') as [string, string | undefined];
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  const out = Buffer.alloc(16);
  for (const [i, group] of groups.entries()) out.writeUInt16BE(Number.parseInt(group, 16), i * 2);
  return out;
}

function generalName(name: string): Buffer {
  const ip = ipBytes(name);
  // [7] iPAddress and [2] dNSName, IMPLICIT (primitive context tags).
  return ip ? tlv(0x87, ip) : tlv(0x82, Buffer.from(name, 'ascii'));
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return sequence(oid(id), ...(critical ? [boolean(true)] : []), octetString(value));
}

function pem(label: string, der: Buffer): string {
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** A P-256 key and a self-signed certificate for it (ECDSA with SHA-256). */
export function generateSelfSigned(options: SelfSignedOptions): GeneratedCertificate {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const name = sequence(set(sequence(oid(OID_COMMON_NAME), utf8String(options.commonName))));
  const algorithm = sequence(oid(OID_ECDSA_WITH_SHA256));
  // Backdated a minute so a client whose clock is slightly behind accepts it at once.
  const notBefore = new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000);
  const notAfter = new Date(notBefore.getTime() + options.days * 86_400_000);
  // The key identifier: SHA-1 of the public key's bits (RFC 5280 4.2.1.2, method 1).
  const keyBits = spkiKeyBits(spki);
  const extensions = [
    extension(OID_BASIC_CONSTRAINTS, true, sequence(boolean(true))),
    extension(OID_SUBJECT_KEY_IDENTIFIER, false, octetString(createHash('sha1').update(keyBits).digest())),
    extension(OID_SUBJECT_ALT_NAME, false, sequence(...options.names.map(generalName))),
  ];
  const serial = randomBytes(16);
  serial[0]! &= 0x7f;
  const tbs = sequence(
    explicit(0, tlv(0x02, Buffer.from([2]))), // version v3
    unsignedInteger(serial),
    algorithm,
    name, // issuer
    sequence(time(notBefore), time(notAfter)),
    name, // subject
    spki,
    explicit(3, sequence(...extensions)),
  );
  const signature = sign('sha256', tbs, privateKey); // DER ECDSA-Sig-Value
  const certificate = sequence(tbs, algorithm, bitString(signature));
  return {
    cert: pem('CERTIFICATE', certificate),
    key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
  };
}

/** The subjectPublicKey BIT STRING's bytes inside a DER SubjectPublicKeyInfo (after its unused-bits byte). */
function spkiKeyBits(spki: Buffer): Buffer {
  // SEQUENCE { SEQUENCE algorithm, BIT STRING key }: skip the outer header and the algorithm.
  let at = headerLength(spki, 0);
  at += headerLength(spki, at) + contentLength(spki, at);
  return spki.subarray(
    at + headerLength(spki, at) + 1,
    at + headerLength(spki, at) + contentLength(spki, at),
  );
}

function headerLength(der: Buffer, at: number): number {
  const first = der[at + 1]!;
  return first < 0x80 ? 2 : 2 + (first & 0x7f);
}

function contentLength(der: Buffer, at: number): number {
  const first = der[at + 1]!;
  if (first < 0x80) return first;
  let n = 0;
  for (let i = 0; i < (first & 0x7f); i++) n = n * 256 + der[at + 2 + i]!;
  return n;
}
