import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { RjobError } from '@rjob/core';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { SshErrorCode } from './errors.js';
import {
  checkHostKey,
  entryMatchesName,
  fingerprintSha256,
  hashKnownHostsName,
  knownHostsName,
  parseKnownHosts,
  verifyHostKey,
  verifyHostKeyInEntries,
} from './known-hosts.js';
import { type SshdFixture, startSshd, sshdUnavailableReason } from './testing/sshd-fixture.js';

const run = promisify(execFile);

async function keygen(dir: string, name: string, type = 'ed25519'): Promise<{ line: string; blob: Buffer }> {
  const path = join(dir, name);
  await run('ssh-keygen', ['-q', '-t', ...type.split(' '), '-N', '', '-C', name, '-f', path]);
  const line = (await readFile(`${path}.pub`, 'utf8')).trim().split(' ').slice(0, 2).join(' ');
  return { line, blob: Buffer.from(line.split(' ')[1]!, 'base64') };
}

/** Exit status of `ssh-keygen -F name -f file` (0 = found), the reference for host matching. */
async function keygenFinds(file: string, name: string): Promise<boolean> {
  try {
    await run('ssh-keygen', ['-F', name, '-f', file]);
    return true;
  } catch {
    return false;
  }
}

async function rejection(promise: Promise<unknown>): Promise<RjobError> {
  try {
    await promise;
  } catch (error) {
    if (RjobError.is(error)) return error;
    throw error;
  }
  throw new Error('expected a rejection');
}

let dir: string;
let keyA: { line: string; blob: Buffer };
let keyB: { line: string; blob: Buffer };
let keyRsa: { line: string; blob: Buffer };

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rjob-kh-'));
  [keyA, keyB, keyRsa] = await Promise.all([keygen(dir, 'a'), keygen(dir, 'b'), keygen(dir, 'r', 'ecdsa')]);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('parseKnownHosts', () => {
  it('reads markers, comments, blank lines, comments after keys, and skips bad lines with reasons', () => {
    const text = [
      '# a comment',
      '',
      `  example.com,192.0.2.1 ${keyA.line} my comment here`,
      `@revoked * ${keyB.line}`,
      `@cert-authority *.example.com ${keyA.line}`,
      '@bogus host ssh-ed25519 AAAA',
      'host.only-two-fields ssh-ed25519',
      `weird.example ssh-future-type AAAAB3Nza`,
      `mismatch.example ssh-rsa ${keyA.line.split(' ')[1]}`,
      'old.example 1024 35 12345',
      `\texample.org\tssh-ed25519\t${keyA.line.split(' ')[1]}\r`,
    ].join('\n');
    const { entries, problems } = parseKnownHosts(text, 'f');
    expect(entries.map((e) => [e.line, e.marker, e.hosts, e.keyType])).toEqual([
      [3, undefined, 'example.com,192.0.2.1', 'ssh-ed25519'],
      [4, 'revoked', '*', 'ssh-ed25519'],
      [5, 'cert-authority', '*.example.com', 'ssh-ed25519'],
      [8, undefined, 'weird.example', 'ssh-future-type'],
      [11, undefined, 'example.org', 'ssh-ed25519'],
    ]);
    expect(entries[0]!.comment).toBe('my comment here');
    expect(problems.map((p) => p.line)).toEqual([6, 7, 9, 10]);
  });

  it('names hosts like ssh: bare on port 22, [host]:port elsewhere, lowercased', () => {
    expect(knownHostsName('Example.COM')).toBe('example.com');
    expect(knownHostsName('example.com', 22)).toBe('example.com');
    expect(knownHostsName('127.0.0.1', 2222)).toBe('[127.0.0.1]:2222');
  });

  it('matches plain, wildcard, negated and [host]:port patterns as ssh-keygen -F does', async () => {
    const lines = [
      `plain.example ${keyA.line}`,
      `*.wild.example,!bad.wild.example ${keyA.line}`,
      `[127.0.0.*]:2222,![127.0.0.9]:2222 ${keyA.line}`,
      `h?st.example ${keyA.line}`,
      `[ported.example]:2200 ${keyA.line}`,
      `UPPER.example ${keyA.line}`,
    ];
    const file = join(dir, 'patterns');
    await writeFile(file, `${lines.join('\n')}\n`);
    const { entries } = parseKnownHosts(lines.join('\n'), file);
    const names = [
      'plain.example',
      'Plain.Example',
      'x.plain.example',
      'a.wild.example',
      'a.b.wild.example',
      'bad.wild.example',
      'wild.example',
      '[127.0.0.5]:2222',
      '[127.0.0.9]:2222',
      '[127.0.0.5]:2223',
      '127.0.0.5',
      'host.example',
      'hoost.example',
      'ported.example',
      '[ported.example]:2200',
      'upper.example',
    ];
    for (const name of names) {
      const ours = entries.some((e) => entryMatchesName(e, name));
      expect({ name, found: ours }).toEqual({ name, found: await keygenFinds(file, name.toLowerCase()) });
    }
  });

  it('matches hashed names it writes, and ssh-keygen -F finds them', async () => {
    const name = '[10.1.2.3]:2022';
    const hashed = hashKnownHostsName(name);
    expect(hashed).toMatch(/^\|1\|[A-Za-z0-9+/=]+\|[A-Za-z0-9+/=]+$/);
    const file = join(dir, 'hashed-ours');
    await writeFile(file, `${hashed} ${keyA.line}\n`);
    const { entries } = parseKnownHosts(await readFile(file, 'utf8'), file);
    expect(entryMatchesName(entries[0]!, name)).toBe(true);
    expect(entryMatchesName(entries[0]!, '[10.1.2.3]:2023')).toBe(false);
    expect(await keygenFinds(file, name)).toBe(true);
  });

  it('classifies keys: match, unknown (other types known), changed, revoked', () => {
    const text = [`host.example ${keyA.line}`, `host.example ${keyRsa.line}`, `@revoked * ${keyB.line}`].join(
      '\n',
    );
    const { entries } = parseKnownHosts(text, 'kh');
    expect(verifyHostKeyInEntries(entries, { host: 'host.example', keyBlob: keyA.blob }).status).toBe(
      'match',
    );
    const unknown = verifyHostKeyInEntries(entries, { host: 'other.example', keyBlob: keyA.blob });
    expect(unknown.status).toBe('unknown');
    expect(unknown.fingerprint).toBe(fingerprintSha256(keyA.blob));
    // Same name on another port is a different host for ssh.
    expect(
      verifyHostKeyInEntries(entries, { host: 'host.example', port: 2222, keyBlob: keyA.blob }).status,
    ).toBe('unknown');
    const other = parseKnownHosts(`host.example ${keyRsa.line}`, 'kh').entries;
    const onlyOther = verifyHostKeyInEntries(other, { host: 'host.example', keyBlob: keyA.blob });
    expect(onlyOther).toMatchObject({ status: 'unknown', otherKeyTypes: ['ecdsa-sha2-nistp256'] });
    const changed = parseKnownHosts(`host.example ${keyB.line}`, 'kh').entries;
    expect(verifyHostKeyInEntries(changed, { host: 'host.example', keyBlob: keyA.blob })).toMatchObject({
      status: 'changed',
      offending: [{ line: 1 }],
    });
    expect(verifyHostKeyInEntries(entries, { host: 'anything', keyBlob: keyB.blob }).status).toBe('revoked');
  });

  it('treats another ECDSA curve for a known host as a changed key, as ssh does', async () => {
    const p384 = await keygen(dir, 'p384', 'ecdsa -b 384');
    const { entries } = parseKnownHosts(`host.example ${keyRsa.line}`, 'kh');
    const v = verifyHostKeyInEntries(entries, { host: 'host.example', keyBlob: p384.blob });
    expect(v).toMatchObject({ status: 'changed', keyType: 'ecdsa-sha2-nistp384' });
  });

  it('never lets an @cert-authority line vouch for a plain key', () => {
    const { entries } = parseKnownHosts(`@cert-authority *.example ${keyA.line}`, 'kh');
    const v = verifyHostKeyInEntries(entries, { host: 'a.example', keyBlob: keyA.blob });
    expect(v.status).toBe('unknown');
    expect(v.certAuthorities).toHaveLength(1);
  });
});

const skip = sshdUnavailableReason();

describe.skipIf(skip !== undefined)('known_hosts against OpenSSH (sshd fixture)', () => {
  let sshd: SshdFixture;
  let hostBlob: Buffer;
  let home: string;

  beforeAll(async () => {
    sshd = await startSshd();
    hostBlob = Buffer.from(sshd.hostKeys[0]!.publicKey.split(' ')[1]!, 'base64');
  });
  afterAll(async () => {
    await sshd?.stop();
  });
  afterEach(async () => {
    vi.unstubAllEnvs();
    if (home) await rm(home, { recursive: true, force: true });
  });

  async function sandboxHome(): Promise<string> {
    home = await mkdtemp(join(tmpdir(), 'rjob-home-'));
    vi.stubEnv('HOME', home);
    return home;
  }

  /** OpenSSH's own client, strict, with every file given explicitly (it ignores $HOME). */
  async function opensshAccepts(knownHostsFile: string): Promise<string> {
    const { stdout } = await run('ssh', [
      '-F',
      '/dev/null',
      '-o',
      'StrictHostKeyChecking=yes',
      '-o',
      `UserKnownHostsFile=${knownHostsFile}`,
      '-o',
      'GlobalKnownHostsFile=/dev/null',
      '-o',
      'BatchMode=yes',
      '-o',
      'IdentitiesOnly=yes',
      '-i',
      sshd.clientKeyPath,
      '-p',
      String(sshd.port),
      `${sshd.user}@${sshd.host}`,
      'echo accepted',
    ]);
    return stdout.trim();
  }

  it('recognises ssh-keyscan output, plain and after ssh-keygen -H', async () => {
    const { stdout } = await run('ssh-keyscan', ['-t', 'ed25519', '-p', String(sshd.port), sshd.host]);
    const file = join(dir, 'scanned');
    await writeFile(file, stdout);
    const query = { host: sshd.host, port: sshd.port, keyBlob: hostBlob };
    expect((await verifyHostKey({ ...query, files: [file] })).status).toBe('match');
    expect(await keygenFinds(file, `[${sshd.host}]:${sshd.port}`)).toBe(true);

    await run('ssh-keygen', ['-H', '-f', file]);
    const hashedText = await readFile(file, 'utf8');
    expect(hashedText).toMatch(/^\|1\|/m);
    expect(hashedText).not.toContain(sshd.host);
    expect(await keygenFinds(file, `[${sshd.host}]:${sshd.port}`)).toBe(true);
    expect((await verifyHostKey({ ...query, files: [file] })).status).toBe('match');
    expect((await verifyHostKey({ ...query, port: sshd.port + 1, files: [file] })).status).toBe('unknown');
  });

  it('refuses an unknown host under yes and ask-without-terminal', async () => {
    const file = join(dir, 'empty-kh');
    await writeFile(file, '');
    for (const policy of ['yes', 'ask'] as const) {
      const error = await rejection(
        checkHostKey({
          host: sshd.host,
          port: sshd.port,
          keyBlob: hostBlob,
          strictHostKeyChecking: policy,
          userKnownHostsFiles: [file],
          globalKnownHostsFiles: [],
        }),
      );
      expect(error.code).toBe(SshErrorCode.HostKeyUnknown);
      expect(error.message).toContain(fingerprintSha256(hostBlob));
    }
    expect(await readFile(file, 'utf8')).toBe('');
  });

  it('asks through confirm under ask', async () => {
    const file = join(dir, 'ask-kh');
    const questions: string[] = [];
    const decision = await checkHostKey({
      host: sshd.host,
      port: sshd.port,
      keyBlob: hostBlob,
      strictHostKeyChecking: 'ask',
      userKnownHostsFiles: [file],
      globalKnownHostsFiles: [],
      confirm: async (q) => {
        questions.push(q);
        return true;
      },
    });
    expect(questions[0]).toContain("can't be established");
    expect(decision.added?.file).toBe(file);
  });

  it('no also accepts and records an unknown host, once even when asked concurrently', async () => {
    const file = join(dir, 'no-kh');
    const decisions = await Promise.all(
      Array.from({ length: 5 }, () =>
        checkHostKey({
          host: sshd.host,
          port: sshd.port,
          keyBlob: hostBlob,
          strictHostKeyChecking: 'no',
          userKnownHostsFiles: [file],
          globalKnownHostsFiles: [],
        }),
      ),
    );
    expect(decisions.filter((d) => d.added !== undefined)).toHaveLength(1);
    expect((await readFile(file, 'utf8')).split('\n').filter(Boolean)).toEqual([sshd.knownHostsLine]);
  });

  for (const hashed of [false, true]) {
    it(`accept-new writes a ${hashed ? 'hashed' : 'plain'} line to ~/.ssh/known_hosts that OpenSSH ssh accepts`, async () => {
      const h = await sandboxHome();
      const options = {
        host: sshd.host,
        port: sshd.port,
        keyBlob: hostBlob,
        strictHostKeyChecking: 'accept-new' as const,
        globalKnownHostsFiles: [],
        hashKnownHosts: hashed,
      };
      const first = await checkHostKey(options);
      const file = join(h, '.ssh', 'known_hosts');
      expect(first.added?.file).toBe(file);
      expect((await stat(join(h, '.ssh'))).mode & 0o777).toBe(0o700);
      const text = await readFile(file, 'utf8');
      expect(text.split('\n').filter(Boolean)).toHaveLength(1);
      if (hashed) expect(text).toMatch(/^\|1\|/);
      else expect(text.startsWith(`[${sshd.host}]:${sshd.port} ssh-ed25519 `)).toBe(true);
      // Known now: nothing more is written.
      const second = await checkHostKey(options);
      expect(second.verification.status).toBe('match');
      expect(second.added).toBeUndefined();
      expect(await opensshAccepts(file)).toBe('accepted');
    });
  }

  it('refuses a changed key under every policy, with the OpenSSH warning', async () => {
    const file = join(dir, 'changed-kh');
    await writeFile(file, `# header\n[${sshd.host}]:${sshd.port} ${keyA.line}\n`);
    for (const policy of ['yes', 'accept-new', 'no', 'ask'] as const) {
      const error = await rejection(
        checkHostKey({
          host: sshd.host,
          port: sshd.port,
          keyBlob: hostBlob,
          strictHostKeyChecking: policy,
          userKnownHostsFiles: [file],
          globalKnownHostsFiles: [],
          confirm: async () => true,
        }),
      );
      expect(error.code).toBe(SshErrorCode.HostKeyChanged);
      expect(error.message).toContain('REMOTE HOST IDENTIFICATION HAS CHANGED');
      expect(error.message).toContain(`Offending ED25519 key in ${file}:2`);
      expect(error.message).toContain(fingerprintSha256(hostBlob));
    }
    // OpenSSH agrees that this file does not vouch for the server.
    await expect(opensshAccepts(file)).rejects.toThrow();
  });

  it('refuses an @revoked key even when a plain line also lists it', async () => {
    const file = join(dir, 'revoked-kh');
    await writeFile(file, `${sshd.knownHostsLine}\n@revoked * ${sshd.hostKeys[0]!.publicKey}\n`);
    const error = await rejection(
      checkHostKey({
        host: sshd.host,
        port: sshd.port,
        keyBlob: hostBlob,
        strictHostKeyChecking: 'no',
        userKnownHostsFiles: [file],
        globalKnownHostsFiles: [],
      }),
    );
    expect(error.code).toBe(SshErrorCode.HostKeyRevoked);
    await expect(opensshAccepts(file)).rejects.toThrow();
  });

  it('accepts what the fixture reports, through wildcard patterns too', async () => {
    const file = join(dir, 'wild-kh');
    await writeFile(
      file,
      `[127.0.0.*]:${sshd.port},![127.0.0.9]:${sshd.port} ${sshd.hostKeys[0]!.publicKey}\n`,
    );
    const decision = await checkHostKey({
      host: sshd.host,
      port: sshd.port,
      keyBlob: hostBlob,
      strictHostKeyChecking: 'yes',
      userKnownHostsFiles: [file],
      globalKnownHostsFiles: [],
    });
    expect(decision.verification.status).toBe('match');
    expect(await opensshAccepts(file)).toBe('accepted');
  });
});
