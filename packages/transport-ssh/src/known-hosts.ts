import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { appendFile, mkdir, readFile, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { RjobError } from '@rjob/core';
import { SshErrorCode } from './errors.js';
import { parsedFileCache } from './parsed-files.js';
import { matchPatternList } from './host-patterns.js';

/** A parsed, usable known_hosts line. */
export interface KnownHostsEntry {
  /** File the line came from (or the label given to {@link parseKnownHosts}). */
  file: string;
  /** 1-based line number. */
  line: number;
  marker: 'cert-authority' | 'revoked' | undefined;
  /** The host field as written: a pattern list, or one hashed `|1|salt|hash` name. */
  hosts: string;
  hashed: boolean;
  /** Key type field, e.g. `ssh-ed25519`; types we do not know are kept, they just never match. */
  keyType: string;
  /** Decoded public key blob (the wire format ssh sends). */
  keyBlob: Buffer;
  comment: string | undefined;
}

/** A line that was skipped, with why (OpenSSH skips such lines too). */
export interface KnownHostsProblem {
  file: string;
  line: number;
  reason: string;
}

export interface ParsedKnownHosts {
  entries: KnownHostsEntry[];
  problems: KnownHostsProblem[];
}

const HASH_MAGIC = '|1|';

/** Reads the key type encoded at the start of an SSH public key blob, or undefined if malformed. */
export function keyTypeOfBlob(blob: Buffer): string | undefined {
  if (blob.length < 4) return undefined;
  const length = blob.readUInt32BE(0);
  if (length === 0 || length > 64 || blob.length < 4 + length) return undefined;
  return blob.subarray(4, 4 + length).toString('latin1');
}

/** `SHA256:...` fingerprint as `ssh-keygen -l` prints it (unpadded base64). */
export function fingerprintSha256(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** The name OpenSSH looks up and writes: `host` on port 22, `[host]:port` elsewhere, lowercased. */
export function knownHostsName(host: string, port = 22): string {
  const lowered = host.toLowerCase();
  return port === 22 ? lowered : `[${lowered}]:${port}`;
}

/** `|1|salt|hash` for `name`, with a fresh random salt unless one is given (as `ssh-keygen -H`). */
export function hashKnownHostsName(name: string, salt: Buffer = randomBytes(20)): string {
  const hash = createHmac('sha1', salt).update(name).digest();
  return `${HASH_MAGIC}${salt.toString('base64')}|${hash.toString('base64')}`;
}

function hashedNameMatches(hashedField: string, name: string): boolean {
  const parts = hashedField.slice(HASH_MAGIC.length).split('|');
  if (parts.length !== 2) return false;
  const salt = Buffer.from(parts[0]!, 'base64');
  const expected = Buffer.from(parts[1]!, 'base64');
  const actual = createHmac('sha1', salt).update(name).digest();
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** Parses known_hosts text (see sshd(8), "SSH_KNOWN_HOSTS FILE FORMAT"). Never throws on content. */
export function parseKnownHosts(text: string, file = '<known_hosts>'): ParsedKnownHosts {
  const entries: KnownHostsEntry[] = [];
  const problems: KnownHostsProblem[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = i + 1;
    const content = lines[i]!.replace(/\r$/, '').trim();
    if (content === '' || content.startsWith('#')) continue;
    const fields = content.split(/[ \t]+/);
    let marker: KnownHostsEntry['marker'];
    if (fields[0]!.startsWith('@')) {
      const word = fields.shift()!;
      if (word === '@cert-authority') marker = 'cert-authority';
      else if (word === '@revoked') marker = 'revoked';
      else {
        problems.push({ file, line, reason: `unknown marker ${word}` });
        continue;
      }
    }
    const [hosts, keyType, keyText, ...rest] = fields;
    if (hosts === undefined || keyType === undefined || keyText === undefined) {
      problems.push({ file, line, reason: 'expected: [marker] hosts keytype key [comment]' });
      continue;
    }
    // Old SSH-1 RSA lines ("bits exponent modulus") are numbers in the key type slot.
    if (/^\d+$/.test(keyType) || !BASE64.test(keyText)) {
      problems.push({ file, line, reason: 'not an SSH-2 public key' });
      continue;
    }
    const keyBlob = Buffer.from(keyText, 'base64');
    const embedded = keyTypeOfBlob(keyBlob);
    if (embedded !== undefined && embedded !== keyType) {
      problems.push({ file, line, reason: `key type ${keyType} does not match key data (${embedded})` });
      continue;
    }
    const hashed = hosts.startsWith(HASH_MAGIC);
    if (hosts.startsWith('|') && !hashed) {
      problems.push({ file, line, reason: 'unknown host hash format' });
      continue;
    }
    entries.push({
      file,
      line,
      marker,
      hosts,
      hashed,
      keyType,
      keyBlob,
      comment: rest.length > 0 ? rest.join(' ') : undefined,
    });
  }
  return { entries, problems };
}

/** True when the entry's host field covers `name` (already in `host` / `[host]:port` form). */
export function entryMatchesName(entry: KnownHostsEntry, name: string): boolean {
  const lowered = name.toLowerCase();
  if (entry.hashed) return hashedNameMatches(entry.hosts, lowered);
  return matchPatternList(lowered, entry.hosts) === 'match';
}

/** known_hosts files, parsed once while unchanged (parsed-files.ts). */
const parsedKnownHosts = parsedFileCache(parseKnownHosts);

/** One file, parsed; undefined when it does not exist. */
async function parsedFile(file: string): Promise<ParsedKnownHosts | undefined> {
  try {
    return await parsedKnownHosts(file, await stat(file));
  } catch (error) {
    // Missing, or removed between the stat and the read: skipped, as ssh does.
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** Reads and parses known_hosts files; missing files are skipped, as ssh does. */
export async function readKnownHostsFiles(files: readonly string[]): Promise<ParsedKnownHosts> {
  const out: ParsedKnownHosts = { entries: [], problems: [] };
  for (const parsed of await Promise.all(files.map(parsedFile))) {
    if (!parsed) continue;
    out.entries.push(...parsed.entries);
    out.problems.push(...parsed.problems);
  }
  return out;
}

export type HostKeyStatus = 'match' | 'unknown' | 'changed' | 'revoked';

export interface HostKeyVerification {
  status: HostKeyStatus;
  /** Name looked up (`host` or `[host]:port`). */
  name: string;
  keyType: string;
  fingerprint: string;
  /** The entry that matched (status `match`) or revoked the key (status `revoked`). */
  entry?: KnownHostsEntry;
  /** For `changed`: the known keys of the same type that differ from the one presented. */
  offending: KnownHostsEntry[];
  /** Key types known for this host other than the one presented (ssh warns about these). */
  otherKeyTypes: string[];
  /**
   * `@cert-authority` lines that cover this host. They only vouch for host *certificates*, which
   * this client does not negotiate yet, so they never make a plain key `match`.
   */
  certAuthorities: KnownHostsEntry[];
}

export interface HostKeyQuery {
  host: string;
  /** Default 22. */
  port?: number;
  /** Public key blob as sent by the server (ssh2's `hostVerifier` receives it). */
  keyBlob: Buffer;
  /** Default: read from the blob. */
  keyType?: string;
}

/**
 * ssh calls a key "changed" when a known key has the same base type; all ECDSA curves share one
 * type there, so a P-384 key where a P-256 key was known is a change, not a new key.
 */
function keyFamily(keyType: string): string {
  if (keyType.startsWith('ecdsa-sha2-')) return 'ecdsa';
  if (keyType.startsWith('sk-ecdsa-sha2-')) return 'sk-ecdsa';
  return keyType;
}

/** Classifies a presented key against parsed entries (pure; see {@link verifyHostKey}). */
export function verifyHostKeyInEntries(
  entries: readonly KnownHostsEntry[],
  query: HostKeyQuery,
): HostKeyVerification {
  const name = knownHostsName(query.host, query.port);
  const keyType = query.keyType ?? keyTypeOfBlob(query.keyBlob) ?? 'unknown';
  const result: HostKeyVerification = {
    status: 'unknown',
    name,
    keyType,
    fingerprint: fingerprintSha256(query.keyBlob),
    offending: [],
    otherKeyTypes: [],
    certAuthorities: [],
  };
  const relevant = entries.filter((e) => entryMatchesName(e, name));
  // Revocation beats everything, wherever the revoking line sits.
  const revoked = relevant.find((e) => e.marker === 'revoked' && e.keyBlob.equals(query.keyBlob));
  if (revoked) return { ...result, status: 'revoked', entry: revoked };
  result.certAuthorities = relevant.filter((e) => e.marker === 'cert-authority');
  const plain = relevant.filter((e) => e.marker === undefined);
  const exact = plain.find((e) => e.keyBlob.equals(query.keyBlob));
  if (exact) return { ...result, status: 'match', entry: exact };
  const family = keyFamily(keyType);
  result.offending = plain.filter((e) => keyFamily(e.keyType) === family);
  result.otherKeyTypes = [
    ...new Set(plain.filter((e) => keyFamily(e.keyType) !== family).map((e) => e.keyType)),
  ];
  if (result.offending.length > 0) result.status = 'changed';
  return result;
}

/** Checks a presented host key against known_hosts files. */
export async function verifyHostKey(
  query: HostKeyQuery & { files: readonly string[] },
): Promise<HostKeyVerification> {
  const { entries } = await readKnownHostsFiles(query.files);
  return verifyHostKeyInEntries(entries, query);
}

/** `~/.ssh/known_hosts` and `known_hosts2`, from `os.homedir()` (so `$HOME` sandboxes it). */
export function defaultUserKnownHostsFiles(): string[] {
  const dir = join(homedir(), '.ssh');
  return [join(dir, 'known_hosts'), join(dir, 'known_hosts2')];
}

/** System-wide files ssh also consults. */
export const DEFAULT_GLOBAL_KNOWN_HOSTS_FILES: readonly string[] = [
  '/etc/ssh/ssh_known_hosts',
  '/etc/ssh/ssh_known_hosts2',
];

/**
 * OpenSSH's StrictHostKeyChecking. `ask` asks through `confirm` and, without one (no terminal),
 * behaves like `yes`. Changed and revoked keys are refused under every policy.
 */
export type StrictHostKeyChecking = 'yes' | 'accept-new' | 'no' | 'ask';

export interface CheckHostKeyOptions extends HostKeyQuery {
  /** Default `ask`, which refuses unknown hosts when there is no `confirm`. */
  strictHostKeyChecking?: StrictHostKeyChecking;
  /** Default {@link defaultUserKnownHostsFiles}. New keys are appended to the first. */
  userKnownHostsFiles?: readonly string[];
  /** Default {@link DEFAULT_GLOBAL_KNOWN_HOSTS_FILES}. */
  globalKnownHostsFiles?: readonly string[];
  /** Write new entries hashed (`|1|...`), like `HashKnownHosts yes`. Default false, as in ssh. */
  hashKnownHosts?: boolean;
  /** Asked (policy `ask` only) with an OpenSSH-style question; resolve true to accept. */
  confirm?: (question: string) => Promise<boolean>;
}

export interface HostKeyDecision {
  verification: HostKeyVerification;
  /** The line appended to a known_hosts file, when one was. */
  added?: { file: string; line: string };
}

function keyLabel(keyType: string): string {
  if (keyType === 'ssh-ed25519') return 'ED25519';
  if (keyType === 'sk-ssh-ed25519@openssh.com') return 'ED25519-SK';
  if (keyType.startsWith('ecdsa-sha2-')) return 'ECDSA';
  if (keyType.startsWith('sk-ecdsa-sha2-')) return 'ECDSA-SK';
  if (keyType === 'ssh-rsa') return 'RSA';
  if (keyType === 'ssh-dss') return 'DSA';
  return keyType.toUpperCase();
}

const BANNER = '@'.repeat(59);

/** The warning ssh prints for a changed host key; part of the ERR_SSH_HOST_KEY_CHANGED message. */
export function changedHostKeyWarning(v: HostKeyVerification, addTo?: string): string {
  const label = keyLabel(v.keyType);
  const lines = [
    BANNER,
    '@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @',
    BANNER,
    'IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!',
    'Someone could be eavesdropping on you right now (man-in-the-middle attack)!',
    'It is also possible that a host key has just been changed.',
    `The fingerprint for the ${label} key sent by the remote host is`,
    `${v.fingerprint}.`,
    'Please contact your system administrator.',
  ];
  if (addTo !== undefined) lines.push(`Add correct host key in ${addTo} to get rid of this message.`);
  for (const e of v.offending) lines.push(`Offending ${keyLabel(e.keyType)} key in ${e.file}:${e.line}`);
  lines.push(`Host key for ${v.name} has changed and you have requested strict checking.`);
  lines.push('Host key verification failed.');
  return lines.join('\n');
}

function revokedWarning(v: HostKeyVerification): string {
  return [
    BANNER,
    '@       WARNING: REVOKED HOST KEY DETECTED!               @',
    BANNER,
    `The ${keyLabel(v.keyType)} host key for ${v.name} is marked as revoked`,
    `(${v.entry?.file}:${v.entry?.line}).`,
    'This could mean that a stolen key is being used to impersonate this host.',
    'Host key verification failed.',
  ].join('\n');
}

function unknownQuestion(v: HostKeyVerification): string {
  const lines = [
    `The authenticity of host '${v.name}' can't be established.`,
    `${keyLabel(v.keyType)} key fingerprint is ${v.fingerprint}.`,
  ];
  if (v.otherKeyTypes.length > 0) {
    lines.push(`Keys of other types are already known for this host: ${v.otherKeyTypes.join(', ')}.`);
  }
  lines.push('Are you sure you want to continue connecting (yes/no)?');
  return lines.join('\n');
}

function details(v: HostKeyVerification): Record<string, unknown> {
  return { host: v.name, keyType: v.keyType, fingerprint: v.fingerprint };
}

// One append at a time per file, re-checked under the lock, so a fan-out to one new host
// does not write the same line many times.
const fileLocks = new Map<string, Promise<unknown>>();

async function withFileLock<T>(file: string, fn: () => Promise<T>): Promise<T> {
  const previous = fileLocks.get(file) ?? Promise.resolve();
  const next = previous.then(fn, fn);
  fileLocks.set(
    file,
    next.catch(() => {}),
  );
  return next;
}

async function appendKnownHost(file: string, v: HostKeyVerification, blob: Buffer, hashed: boolean) {
  const hostField = hashed ? hashKnownHostsName(v.name) : v.name;
  const line = `${hostField} ${v.keyType} ${blob.toString('base64')}`;
  // ~/.ssh must not be readable by others; mkdir's mode only applies to dirs it creates.
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  let prefix = '';
  try {
    const info = await stat(file);
    if (info.size > 0) {
      const text = await readFile(file, 'utf8');
      if (!text.endsWith('\n')) prefix = '\n';
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  await appendFile(file, `${prefix}${line}\n`, { mode: 0o600 });
  return { file, line };
}

/**
 * Details of a host-key refusal. `permanent` tells the session client that reconnecting to the same
 * host cannot help until someone edits known_hosts, so its automatic retries stop at once.
 */
function refusal(v: HostKeyVerification): Record<string, unknown> {
  return { ...details(v), permanent: true };
}

/**
 * Verifies a host key and applies the StrictHostKeyChecking policy: resolves when the key may be
 * used (appending it to the first user known_hosts file for `accept-new`, `no` and a confirmed
 * `ask`, as ssh does), throws a coded {@link RjobError} when it must be refused.
 */
export async function checkHostKey(options: CheckHostKeyOptions): Promise<HostKeyDecision> {
  const policy = options.strictHostKeyChecking ?? 'ask';
  const userFiles = options.userKnownHostsFiles ?? defaultUserKnownHostsFiles();
  const globalFiles = options.globalKnownHostsFiles ?? DEFAULT_GLOBAL_KNOWN_HOSTS_FILES;
  const files = [...userFiles, ...globalFiles];
  const verification = await verifyHostKey({ ...options, files });
  const v = verification;
  if (v.status === 'match') return { verification };
  if (v.status === 'revoked') {
    throw new RjobError(SshErrorCode.HostKeyRevoked, revokedWarning(v), { details: refusal(v) });
  }
  if (v.status === 'changed') {
    throw new RjobError(SshErrorCode.HostKeyChanged, changedHostKeyWarning(v, userFiles[0]), {
      details: { ...refusal(v), offending: v.offending.map((e) => `${e.file}:${e.line}`) },
    });
  }
  let accept = policy === 'accept-new' || policy === 'no';
  if (policy === 'ask' && options.confirm !== undefined) accept = await options.confirm(unknownQuestion(v));
  if (!accept) {
    const reason =
      policy === 'ask'
        ? 'Host key verification failed (no terminal to ask on).'
        : `No ${keyLabel(v.keyType)} host key is known for ${v.name} and you have requested strict checking.\nHost key verification failed.`;
    throw new RjobError(
      SshErrorCode.HostKeyUnknown,
      `${unknownQuestion(v).split('\n').slice(0, -1).join('\n')}\n${reason}`,
      { details: refusal(v) },
    );
  }
  const target = userFiles[0];
  if (target === undefined) return { verification };
  return withFileLock(target, async () => {
    const again = await verifyHostKey({ ...options, files });
    if (again.status === 'match') return { verification };
    const added = await appendKnownHost(target, v, options.keyBlob, options.hashKnownHosts ?? false);
    return { verification, added };
  });
}
