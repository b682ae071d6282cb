import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { chmod, copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startSshd, sshdUnavailableReason } from './sshd-fixture.js';

/** Alive and not a zombie (zombies of sshd's setsid'd children are reaped by pid 1 later). */
function isLive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

const skip = sshdUnavailableReason();

describe.skipIf(skip !== undefined)('startSshd', () => {
  it('serves another loopback address and, on stop, ends its sessions and removes its dir', async () => {
    await using sshd = await startSshd({ address: '127.0.0.3' });
    expect(sshd.host).toBe('127.0.0.3');
    expect(sshd.knownHostsLine).toBe(`[127.0.0.3]:${sshd.port} ${sshd.hostKeys[0]!.publicKey}`);
    const knownHosts = join(sshd.dir, 'client_known_hosts');
    await writeFile(knownHosts, `${sshd.knownHostsLine}\n`);
    const ssh = spawn(
      'ssh',
      [
        '-F',
        '/dev/null',
        '-o',
        'BatchMode=yes',
        '-o',
        'StrictHostKeyChecking=yes',
        '-o',
        `UserKnownHostsFile=${knownHosts}`,
        '-i',
        sshd.clientKeyPath,
        '-p',
        String(sshd.port),
        `${sshd.user}@${sshd.host}`,
        'echo started; exec sleep 600',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const exited = new Promise((resolve) => ssh.once('exit', resolve));
    try {
      await new Promise<void>((resolve, reject) => {
        ssh.stdout.on('data', (d: Buffer) => d.toString().includes('started') && resolve());
        ssh.once('exit', (code) => reject(new Error(`ssh exited ${code}: ${sshd.logs()}`)));
      });
      const sessionPids = sshd.connectionPids();
      expect(sessionPids.length).toBeGreaterThan(0);
      await sshd.stop();
      expect(sessionPids.filter(isLive)).toEqual([]);
      expect(isLive(sshd.pid)).toBe(false);
      expect(existsSync(sshd.dir)).toBe(false);
      // The client notices the server went away.
      await exited;
    } finally {
      ssh.kill();
    }
  });

  it("fails with sshd's own message when sshd will not start, leaving nothing behind", async () => {
    const root = await mkdtemp(join(tmpdir(), 'rjob-sshd-root-'));
    try {
      await expect(startSshd({ tmpRoot: root, extraConfig: ['NoSuchKeyword yes'] })).rejects.toThrow(
        /NoSuchKeyword/i,
      );
      expect(readdirSync(root)).toEqual([]);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('reuses a host key, so a restarted host keeps its identity', async () => {
    await using first = await startSshd();
    const keyCopy = join(first.dir, 'copy');
    await copyFile(first.hostKeys[0]!.path, keyCopy);
    await chmod(keyCopy, 0o600);
    await using second = await startSshd({ address: '127.0.0.4', hostKeyFiles: [keyCopy] });
    expect(second.hostKeys[0]!.publicKey).toBe(first.hostKeys[0]!.publicKey);
    expect(second.port).not.toBe(0);
  });
});
