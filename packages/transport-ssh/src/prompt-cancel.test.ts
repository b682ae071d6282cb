/**
 * A question withdrawn when its connection fails: against a real OpenSSH sshd that drops the
 * connection while the keyboard-interactive question is open (LoginGraceTime runs out, or the
 * process serving it is killed). The attempt rejects with its code, the prompter's signal aborts,
 * and the shared queue moves on to other connections' questions.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { RjobError } from '@rjob/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuthShared, type SshAuthShared, type SshPrompter, type SshPromptRequest } from './auth.js';
import { type ConnectSshOptions, connectSsh, execOnce } from './connect.js';
import { SshErrorCode } from './errors.js';
import { type SshdFixture, sshdUnavailableReason, startSshd } from './testing/sshd-fixture.js';

const run = promisify(execFile);
const skip = sshdUnavailableReason();

/** Polls until `condition` holds; a bound on waiting, not a timing assertion. */
async function until(condition: () => boolean, what: string, limitMs = 20_000): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Never answers keyboard-interactive (the person has walked away); answers a passphrase at once.
 * Remembers every request and whether its signal was aborted, never an answer.
 */
function walkedAway(passphrase?: string): SshPrompter & { asked: SshPromptRequest[] } {
  const asked: SshPromptRequest[] = [];
  return {
    asked,
    ask(request) {
      asked.push(request);
      if (request.kind === 'passphrase' && passphrase !== undefined) return Promise.resolve(passphrase);
      // Ignores the signal on purpose: the attempt must not wait for the prompter to honour it.
      return new Promise<string | undefined>(() => {});
    },
  };
}

/** The shared queue, counting the questions that entered it. */
function countingShared(): SshAuthShared & { entered: () => number } {
  const real = createAuthShared();
  let entered = 0;
  return {
    unlocked: real.unlocked,
    entered: () => entered,
    serialize(fn, signal) {
      entered++;
      return real.serialize(fn, signal);
    },
  };
}

async function rejection(attempt: Promise<unknown>): Promise<RjobError> {
  const outcome = await attempt.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!RjobError.is(outcome)) throw new Error(`expected an RjobError, got ${String(outcome)}`);
  return outcome;
}

/** Kills the sshd processes that serve connections started since `before` was taken. */
function killNewConnections(sshd: SshdFixture, before: number[]): number[] {
  const pids = sshd.connectionPids().filter((pid) => !before.includes(pid));
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  return pids;
}

describe.skipIf(skip !== undefined)(
  'a question open when the connection fails is withdrawn (OpenSSH sshd)',
  { timeout: 90_000 },
  () => {
    let dir: string;
    let sshd: SshdFixture;
    let graceSshd: SshdFixture;
    let encryptedKey: string;
    const passphrase = `pp-${randomBytes(6).toString('hex')}`;

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'rjob-prompt-cancel-'));
      encryptedKey = join(dir, 'id_encrypted');
      await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', passphrase, '-C', 'enc', '-f', encryptedKey]);
      // keyboard-interactive through PAM asks `Password:` even of a user without one; the
      // encrypted key lets a second connection log in through a question of its own.
      [sshd, graceSshd] = await Promise.all([
        startSshd({ keyboardInteractive: true, clientKeyFile: encryptedKey, address: '127.0.0.5' }),
        startSshd({ keyboardInteractive: true, address: '127.0.0.6', extraConfig: ['LoginGraceTime 2'] }),
      ]);
    });
    afterAll(async () => {
      await Promise.all([sshd?.stop(), graceSshd?.stop()]);
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    const base = (server: SshdFixture): ConnectSshOptions => ({
      host: server.host,
      port: server.port,
      username: server.user,
      strictHostKeyChecking: 'no',
      userKnownHostsFiles: [join(dir, `known_hosts_${server.port}`)],
      globalKnownHostsFiles: [],
    });

    it('LoginGraceTime runs out while keyboard-interactive is asked: coded failure, signal aborted', async () => {
      const prompter = walkedAway();
      const error = await rejection(connectSsh({ ...base(graceSshd), prompter }));
      expect(error.code).toBe(SshErrorCode.ConnectFailed);
      expect(error.message).toContain('(while the keyboard-interactive question was open)');
      expect(error.details).toMatchObject({ withdrawnQuestion: 'keyboard-interactive' });
      expect(prompter.asked.map((r) => r.kind)).toEqual(['keyboard-interactive']);
      const signal = prompter.asked[0]!.signal!;
      expect(signal.aborted).toBe(true);
      expect(signal.reason).toBe(error);
    });

    it('the unknown-host-key question is withdrawn too: confirm gets the signal', async () => {
      const signals: AbortSignal[] = [];
      const prompter: SshPrompter = {
        confirm(_question, options) {
          signals.push(options!.signal!);
          return new Promise<boolean>(() => {});
        },
      };
      const error = await rejection(
        connectSsh({
          ...base(graceSshd),
          // Its own file: the other tests' connections (StrictHostKeyChecking no) recorded the key.
          userKnownHostsFiles: [join(dir, 'known_hosts_ask')],
          strictHostKeyChecking: 'ask',
          prompter,
        }),
      );
      expect(error.code).toBe(SshErrorCode.ConnectFailed);
      expect(error.details).toMatchObject({ withdrawnQuestion: 'host key' });
      expect(signals).toHaveLength(1);
      expect(signals[0]!.aborted).toBe(true);
      expect(signals[0]!.reason).toBe(error);
    });

    /**
     * Two connections on one queue: the first (no key) has its keyboard-interactive question open
     * and never answered; the second's passphrase question waits behind it. `before` and
     * `withFirst` are the server's connection processes before each connection.
     */
    const oneOpenOneQueued = async () => {
      const prompter = walkedAway(passphrase);
      const shared = countingShared();
      const before = sshd.connectionPids();
      const first = connectSsh({ ...base(sshd), prompter, authShared: shared });
      const firstOutcome = rejection(first);
      await until(() => prompter.asked.length === 1, 'the keyboard-interactive question');
      const withFirst = sshd.connectionPids();
      const second = connectSsh({
        ...base(sshd),
        identities: [{ key: await readFile(encryptedKey), file: encryptedKey }],
        prompter,
        authShared: shared,
      });
      // Handled at once: a test that expects it to succeed awaits `second` itself.
      second.catch(() => {});
      await until(() => shared.entered() === 2, 'the passphrase question to be queued');
      return { prompter, before, withFirst, firstOutcome, second };
    };

    it('the server dies with a question open: that question is withdrawn, the next one in the queue is asked', async () => {
      const { prompter, before, withFirst, firstOutcome, second } = await oneOpenOneQueued();
      expect(prompter.asked).toHaveLength(1);

      // The processes serving the first connection die; the second's keep running.
      const servingFirst = withFirst.filter((pid) => !before.includes(pid));
      expect(servingFirst.length).toBeGreaterThan(0);
      for (const pid of servingFirst) process.kill(pid, 'SIGKILL');
      const error = await firstOutcome;
      expect(error.code).toBe(SshErrorCode.ConnectFailed);
      expect(error.details).toMatchObject({ withdrawnQuestion: 'keyboard-interactive' });
      expect(prompter.asked[0]!.signal!.aborted).toBe(true);
      expect(prompter.asked[0]!.signal!.reason).toBe(error);

      const { client } = await second;
      try {
        expect((await execOnce(client, 'id -un')).stdout.trim()).toBe(sshd.user);
      } finally {
        client.end();
      }
      expect(prompter.asked.map((r) => r.kind)).toEqual(['keyboard-interactive', 'passphrase']);
      expect(prompter.asked[1]!.signal!.aborted).toBe(false);
    });

    it('a connection that fails while its question waits in the queue: the question is never asked', async () => {
      const { prompter, before, withFirst, firstOutcome, second } = await oneOpenOneQueued();
      const secondOutcome = rejection(second);
      // Only the second connection's server side dies, while its question waits its turn.
      expect(killNewConnections(sshd, withFirst).length).toBeGreaterThan(0);
      const error = await secondOutcome;
      expect(error.code).toBe(SshErrorCode.ConnectFailed);
      // Queued, not open: nothing was withdrawn from the user's view.
      expect(error.details).not.toHaveProperty('withdrawnQuestion');

      // The first question is still the open one; it alone was ever asked.
      expect(prompter.asked.map((r) => r.kind)).toEqual(['keyboard-interactive']);
      expect(prompter.asked[0]!.signal!.aborted).toBe(false);
      killNewConnections(sshd, before);
      expect((await firstOutcome).code).toBe(SshErrorCode.ConnectFailed);
      expect(prompter.asked.map((r) => r.kind)).toEqual(['keyboard-interactive']);
    });
  },
);
