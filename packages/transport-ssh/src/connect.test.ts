import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { RjobError } from '@rjob/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ConnectSshOptions, connectSsh, execOnce } from './connect.js';
import { SshErrorCode, toSshConnectError } from './errors.js';
import { type SshdFixture, startSshd, sshdUnavailableReason } from './testing/sshd-fixture.js';

const run = promisify(execFile);

async function failure(options: ConnectSshOptions): Promise<RjobError> {
  const outcome = await connectSsh(options).then(
    (c) => {
      c.client.end();
      return undefined;
    },
    (e: unknown) => e,
  );
  if (!RjobError.is(outcome)) throw new Error(`expected an RjobError, got ${String(outcome)}`);
  return outcome;
}

describe('toSshConnectError', () => {
  it('maps low-level errors to distinct codes', () => {
    const at = { host: 'h', port: 22 };
    expect(toSshConnectError(Object.assign(new Error('x'), { code: 'ECONNREFUSED' }), at).code).toBe(
      SshErrorCode.ConnectRefused,
    );
    expect(toSshConnectError(Object.assign(new Error('x'), { code: 'ENOTFOUND' }), at).code).toBe(
      SshErrorCode.DnsFailed,
    );
    expect(toSshConnectError(Object.assign(new Error('x'), { level: 'client-timeout' }), at).code).toBe(
      SshErrorCode.ConnectTimeout,
    );
    expect(
      toSshConnectError(Object.assign(new Error('x'), { level: 'client-authentication' }), at).code,
    ).toBe(SshErrorCode.AuthFailed);
    expect(toSshConnectError(new Error('other'), at).code).toBe(SshErrorCode.ConnectFailed);
  });
});

const skip = sshdUnavailableReason();

describe.skipIf(skip !== undefined)('connectSsh against OpenSSH sshd', () => {
  let dir: string;
  let sshd: SshdFixture;
  let impostor: SshdFixture;
  let privateKey: Buffer;
  let knownHosts: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rjob-connect-'));
    sshd = await startSshd();
    // Same client key, its own host key: stands in for a host whose key changed.
    impostor = await startSshd({ address: '127.0.0.2', clientKeyFile: sshd.clientKeyPath });
    privateKey = await readFile(sshd.clientKeyPath);
    knownHosts = join(dir, 'known_hosts');
    const impostorName = `[${impostor.host}]:${impostor.port}`;
    // The impostor's name, with the real server's key: what known_hosts held before the "change".
    await writeFile(knownHosts, `${sshd.knownHostsLine}\n${impostorName} ${sshd.hostKeys[0]!.publicKey}\n`);
  });
  afterAll(async () => {
    const fixtures = [sshd, impostor].filter(Boolean);
    const pids = fixtures.map((f) => f.pid);
    await Promise.all(fixtures.map((f) => f.stop()));
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const base = (f: SshdFixture): ConnectSshOptions => ({
    host: f.host,
    port: f.port,
    username: f.user,
    privateKey,
    strictHostKeyChecking: 'yes',
    userKnownHostsFiles: [knownHosts],
    globalKnownHostsFiles: [],
  });

  it('connects with a verified host key and runs a command', async () => {
    const { client, hostKey } = await connectSsh(base(sshd));
    try {
      expect(hostKey.verification.status).toBe('match');
      const result = await execOnce(client, 'echo hi; exit 3');
      expect(result).toMatchObject({ stdout: 'hi\n', exitCode: 3 });
    } finally {
      client.end();
    }
  });

  it('refuses a host whose key differs from known_hosts, even with accept-new', async () => {
    const error = await failure({ ...base(impostor), strictHostKeyChecking: 'accept-new' });
    expect(error.code).toBe(SshErrorCode.HostKeyChanged);
    expect(error.message).toContain('REMOTE HOST IDENTIFICATION HAS CHANGED');
  });

  it('refuses an unknown host when not interactive, and accept-new then adds it', async () => {
    const fresh = join(dir, 'fresh_known_hosts');
    const error = await failure({
      ...base(sshd),
      userKnownHostsFiles: [fresh],
      strictHostKeyChecking: 'ask',
    });
    expect(error.code).toBe(SshErrorCode.HostKeyUnknown);
    const { client, hostKey } = await connectSsh({
      ...base(sshd),
      userKnownHostsFiles: [fresh],
      strictHostKeyChecking: 'accept-new',
    });
    client.end();
    expect(hostKey.added?.file).toBe(fresh);
    const { client: again, hostKey: second } = await connectSsh({
      ...base(sshd),
      userKnownHostsFiles: [fresh],
    });
    again.end();
    expect(second.verification.status).toBe('match');
  });

  it('refuses a revoked host key', async () => {
    const revoked = join(dir, 'revoked_known_hosts');
    await writeFile(revoked, `${sshd.knownHostsLine}\n@revoked * ${sshd.hostKeys[0]!.publicKey}\n`);
    const error = await failure({ ...base(sshd), userKnownHostsFiles: [revoked] });
    expect(error.code).toBe(SshErrorCode.HostKeyRevoked);
  });

  it('reports a key the server does not accept as an auth failure', async () => {
    const other = join(dir, 'other_key');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other]);
    const error = await failure({ ...base(sshd), privateKey: await readFile(other) });
    expect(error.code).toBe(SshErrorCode.AuthFailed);
  });

  it('reports a closed port as a refused connection', async () => {
    // A port that was free a moment ago; nothing listens on it now.
    const port = await new Promise<number>((resolve) => {
      const server = createServer().listen(0, '127.0.0.1', () => {
        const address = server.address();
        server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
      });
    });
    const error = await failure({ ...base(sshd), port });
    expect(error.code).toBe(SshErrorCode.ConnectRefused);
  });
});
