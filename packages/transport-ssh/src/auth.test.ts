/**
 * Authentication that asks: encrypted identities, password and keyboard-interactive, against a
 * real OpenSSH sshd. The password fixtures use a user of their own (`rjobpass`), whose password
 * is locked again when each fixture stops.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { RjobError } from '@rjob/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuthShared, type SshPrompter, type SshPromptRequest } from './auth.js';
import { isEncryptedKey } from './keys.js';
import { type ConnectSshOptions, connectSsh, execOnce } from './connect.js';
import { SshErrorCode } from './errors.js';
import { resolveSshConfig } from './ssh-config.js';
import { openConnection, type SshTransportOptions } from './ssh-transport.js';
import { type SshdFixture, sshdUnavailableReason, startSshd } from './testing/sshd-fixture.js';

const run = promisify(execFile);
const PASSWORD_USER = 'rjobpass';

/** A prompter that answers from a list and remembers what it was asked (never the answers). */
function scripted(answers: Array<string | undefined>): SshPrompter & { asked: SshPromptRequest[] } {
  const asked: SshPromptRequest[] = [];
  return {
    asked,
    async ask(request) {
      asked.push(request);
      return answers.shift();
    },
  };
}

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

async function whoami(options: ConnectSshOptions): Promise<string> {
  const { client } = await connectSsh(options);
  try {
    return (await execOnce(client, 'id -un')).stdout.trim();
  } finally {
    client.end();
  }
}

/** Everything an error shows: message, details and the causes' messages. */
function everything(error: RjobError): string {
  const cause = (error as { cause?: unknown }).cause;
  return `${error.message}\n${JSON.stringify(error.details)}\n${cause instanceof Error ? cause.message : ''}`;
}

/** Connect options for the fixture's user, with a known_hosts file of the test's own. */
function optionsFor(sshd: SshdFixture, dir: string): ConnectSshOptions {
  return {
    host: sshd.host,
    port: sshd.port,
    username: sshd.user,
    strictHostKeyChecking: 'no',
    userKnownHostsFiles: [join(dir, 'known_hosts')],
    globalKnownHostsFiles: [],
  };
}

const skip = sshdUnavailableReason();

describe.skipIf(skip !== undefined)('encrypted identities against OpenSSH sshd', { timeout: 60_000 }, () => {
  let dir: string;
  let sshd: SshdFixture;
  let encryptedKey: string;
  let strangerKey: string;
  const passphrase = `right ${randomBytes(6).toString('hex')}`;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rjob-auth-'));
    encryptedKey = join(dir, 'id_encrypted');
    strangerKey = join(dir, 'id_stranger');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', passphrase, '-C', 'enc', '-f', encryptedKey]);
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', passphrase, '-C', 'other', '-f', strangerKey]);
    // The fixture authorizes `<clientKeyFile>.pub`: the encrypted key's public half.
    sshd = await startSshd({ clientKeyFile: encryptedKey });
  });
  afterAll(async () => {
    await sshd?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const base = async (file: string): Promise<ConnectSshOptions> => ({
    ...optionsFor(sshd, dir),
    identities: [{ key: await readFile(file), file }],
  });

  it('asks for the passphrase of an encrypted key, with echo off, and logs in', async () => {
    expect(isEncryptedKey(await readFile(encryptedKey))).toBe(true);
    const prompter = scripted([passphrase]);
    expect(await whoami({ ...(await base(encryptedKey)), prompter })).toBe(sshd.user);
    expect(prompter.asked).toEqual([
      expect.objectContaining({
        kind: 'passphrase',
        prompt: `Enter passphrase for key '${encryptedKey}': `,
        echo: false,
        file: encryptedKey,
        attempt: 1,
      }),
    ]);
  });

  it('after three wrong passphrases gives up with a permanent ERR_SSH_AUTH_FAILED', async () => {
    const wrong = ['wrong-one', 'wrong-two', 'wrong-three'];
    const prompter = scripted([...wrong, passphrase]);
    const error = await failure({ ...(await base(encryptedKey)), prompter });
    expect(error.code).toBe(SshErrorCode.AuthFailed);
    expect(error.details).toMatchObject({ permanent: true });
    expect(error.message).toContain(`3 wrong passphrases for key ${encryptedKey}`);
    expect(prompter.asked.map((r) => [r.kind, r.attempt])).toEqual([
      ['passphrase', 1],
      ['passphrase', 2],
      ['passphrase', 3],
    ]);
    expect(prompter.asked[1]!.prompt).toBe(`Bad passphrase, try again for key '${encryptedKey}': `);
    for (const secret of [...wrong, passphrase]) expect(everything(error)).not.toContain(secret);
  });

  it('skips an encrypted key when nobody can be asked, and says so in the coded refusal', async () => {
    const error = await failure(await base(encryptedKey));
    expect(error.code).toBe(SshErrorCode.AuthFailed);
    expect(error.details).toMatchObject({ permanent: true });
    expect(error.message).toContain(
      `key ${encryptedKey} is encrypted and there is no terminal to ask for its passphrase`,
    );
  });

  it('does not ask for the passphrase of a key the server would refuse anyway (as ssh)', async () => {
    const prompter = scripted([passphrase]);
    const error = await failure({ ...(await base(strangerKey)), prompter });
    expect(error.code).toBe(SshErrorCode.AuthFailed);
    expect(prompter.asked).toEqual([]);
  });

  it('an ssh-agent that cannot be reached is skipped, as ssh skips it', async () => {
    const agent = join(dir, 'no-agent.sock');
    expect(await whoami({ ...(await base(encryptedKey)), agent, prompter: scripted([passphrase]) })).toBe(
      sshd.user,
    );
    const error = await failure({ ...(await base(strangerKey)), agent });
    expect(error.code).toBe(SshErrorCode.AuthFailed);
    expect(error.message).toMatch(/ssh-agent: /);
  });

  it('an encrypted PEM key without its .pub is unlocked up front, then offered', async () => {
    const pem = join(dir, 'id_pem');
    await run('ssh-keygen', ['-q', '-t', 'ecdsa', '-m', 'PEM', '-N', passphrase, '-C', 'pem', '-f', pem]);
    await appendFile(join(sshd.dir, 'authorized_keys'), await readFile(`${pem}.pub`));
    await rm(`${pem}.pub`);
    const prompter = scripted(['not it', passphrase]);
    expect(await whoami({ ...(await base(pem)), prompter })).toBe(sshd.user);
    expect(prompter.asked.map((r) => [r.kind, r.attempt])).toEqual([
      ['passphrase', 1],
      ['passphrase', 2],
    ]);
  });

  it('connections of one transport share the question: the key is unlocked once', async () => {
    const configFile = join(dir, 'ssh_config');
    await writeFile(
      configFile,
      `Host enc\n  HostName ${sshd.host}\n  Port ${sshd.port}\n  User ${sshd.user}\n  IdentityFile ${join(dir, 'missing_key')}\n  IdentityFile ${encryptedKey}\n`,
    );
    const host = await resolveSshConfig('enc', { configFile, systemConfigFile: null });
    const prompter = scripted([passphrase, passphrase]);
    const options: SshTransportOptions = {
      prompter,
      authShared: createAuthShared(),
      agent: false,
      strictHostKeyChecking: 'no',
      userKnownHostsFiles: [join(dir, 'known_hosts')],
      globalKnownHostsFiles: [],
    };
    const connections = await Promise.all([openConnection(host, options), openConnection(host, options)]);
    for (const { client } of connections) client.end();
    expect(prompter.asked.map((r) => r.kind)).toEqual(['passphrase']);
  });
});

describe.skipIf(skip !== undefined)(
  'password authentication against OpenSSH sshd',
  { timeout: 60_000 },
  () => {
    let dir: string;
    let sshd: SshdFixture;
    const password = `pw-${randomBytes(9).toString('base64url')}`;

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'rjob-auth-pw-'));
      sshd = await startSshd({ user: PASSWORD_USER, password, address: '127.0.0.3' });
    });
    afterAll(async () => {
      await sshd?.stop();
      if (dir) await rm(dir, { recursive: true, force: true });
      // stop() locked the password again.
      const { stdout } = await run('getent', ['shadow', PASSWORD_USER]);
      expect(stdout.split(':')[1]).toBe('*');
    });

    const base = (): ConnectSshOptions => optionsFor(sshd, dir);

    it('logs in with a password asked through the prompter', async () => {
      const prompter = scripted([password]);
      expect(await whoami({ ...base(), prompter })).toBe(PASSWORD_USER);
      expect(prompter.asked).toEqual([
        expect.objectContaining({
          kind: 'password',
          prompt: `${PASSWORD_USER}@${sshd.host}'s password: `,
          echo: false,
          attempt: 1,
        }),
      ]);
    });

    it('the connect timeout stands still while the user is typing', async () => {
      // Answered well after the connect timeout would have run out, had it kept running.
      const slow: SshPrompter = {
        ask: () => new Promise((resolve) => setTimeout(() => resolve(password), 5_000)),
      };
      expect(await whoami({ ...base(), connectTimeoutMs: 4_000, prompter: slow })).toBe(PASSWORD_USER);
    });

    it('the connect timeout also stands still while a question waits for another host’s answer', async () => {
      // Two connections share the queue (a fan-out): the first question takes the user longer than
      // the connect timeout; the second connection's question waits its turn meanwhile.
      let asked = 0;
      const prompter: SshPrompter = {
        ask: () =>
          ++asked === 1
            ? new Promise((resolve) => setTimeout(() => resolve(password), 5_000))
            : Promise.resolve(password),
      };
      const authShared = createAuthShared();
      const both = await Promise.all([
        whoami({ ...base(), connectTimeoutMs: 4_000, prompter, authShared }),
        whoami({ ...base(), connectTimeoutMs: 4_000, prompter, authShared }),
      ]);
      expect(both).toEqual([PASSWORD_USER, PASSWORD_USER]);
      expect(asked).toBe(2);
    });

    it('never sends a password without a prompter: a coded refusal, nothing tried on the server', async () => {
      const error = await failure(base());
      expect(error.code).toBe(SshErrorCode.AuthFailed);
      expect(error.details).toMatchObject({ permanent: true, methods: expect.arrayContaining(['password']) });
      expect(error.message).toContain('password not tried: no terminal to ask on');
      expect(sshd.logs()).not.toMatch(/Failed password/);
    });

    it('after three wrong passwords fails for good, and the next login on the same server works', async () => {
      const wrong = ['nope-1', 'nope-2', 'nope-3'];
      const prompter = scripted([...wrong, password]);
      const error = await failure({ ...base(), prompter });
      expect(error.code).toBe(SshErrorCode.AuthFailed);
      expect(error.details).toMatchObject({ permanent: true });
      expect(error.message).toContain('password refused 3 times');
      expect(prompter.asked.map((r) => r.attempt)).toEqual([1, 2, 3]);
      expect(prompter.asked[1]!.prompt).toBe(
        `Permission denied, please try again.\n${PASSWORD_USER}@${sshd.host}'s password: `,
      );
      for (const secret of [...wrong, password]) expect(everything(error)).not.toContain(secret);
      expect((sshd.logs().match(/Failed password/g) ?? []).length).toBe(3);

      expect(await whoami({ ...base(), prompter: scripted([password]) })).toBe(PASSWORD_USER);
    });
  },
);

describe.skipIf(skip !== undefined)(
  'keyboard-interactive against OpenSSH sshd (PAM)',
  { timeout: 90_000 },
  () => {
    let dir: string;
    let sshd: SshdFixture;
    const password = `kbd-${randomBytes(9).toString('base64url')}`;

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'rjob-auth-kbd-'));
      sshd = await startSshd({
        user: PASSWORD_USER,
        password,
        keyboardInteractive: true,
        address: '127.0.0.4',
      });
    });
    afterAll(async () => {
      await sshd?.stop();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    const base = (): ConnectSshOptions => optionsFor(sshd, dir);

    it('answers the server’s keyboard-interactive prompt, before trying password (as ssh)', async () => {
      const prompter = scripted([password]);
      expect(await whoami({ ...base(), prompter })).toBe(PASSWORD_USER);
      expect(prompter.asked).toEqual([
        expect.objectContaining({
          kind: 'keyboard-interactive',
          prompt: `(${PASSWORD_USER}@${sshd.host}) Password: `,
          echo: false,
          attempt: 1,
        }),
      ]);
    });

    it('without a prompter tries neither, and says so', async () => {
      const error = await failure(base());
      expect(error.code).toBe(SshErrorCode.AuthFailed);
      expect(error.message).toContain('keyboard-interactive not tried: no terminal to ask on');
      expect(error.message).toContain('password not tried: no terminal to ask on');
    });

    it('three wrong keyboard-interactive answers, then three wrong passwords: a permanent refusal', async () => {
      const wrong = ['k1', 'k2', 'k3', 'p1', 'p2', 'p3'];
      const prompter = scripted([...wrong]);
      const error = await failure({ ...base(), prompter });
      expect(error.code).toBe(SshErrorCode.AuthFailed);
      expect(error.details).toMatchObject({ permanent: true });
      expect(prompter.asked.map((r) => [r.kind, r.attempt])).toEqual([
        ['keyboard-interactive', 1],
        ['keyboard-interactive', 2],
        ['keyboard-interactive', 3],
        ['password', 1],
        ['password', 2],
        ['password', 3],
      ]);
      for (const secret of wrong) expect(everything(error)).not.toContain(`${secret}`);
      expect(await whoami({ ...base(), prompter: scripted([password]) })).toBe(PASSWORD_USER);
    });
  },
);
