/**
 * `rjob agent --listen`: the real bin serving WebSocket clients, and the real bin invoking on it.
 */
import { spawn } from 'node:child_process';
import { mkdir, readdir, stat, symlink, writeFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ExitCode } from './io.js';
import { waitForLine } from './testing/daemon.js';
import { BIN, sandbox } from './testing/sandbox.js';

describe('rjob agent --listen', { timeout: 120_000 }, () => {
  it('serves wss:// with a pinned self-signed certificate and a generated token file', async () => {
    await using s = await sandbox();
    const stateDir = join(s.dir, 'ws-agent');
    const child = spawn(
      process.execPath,
      [BIN, 'agent', '--listen', 'wss://127.0.0.1:0', '--state-dir', stateDir],
      {
        cwd: s.dir,
        env: s.env,
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      const [, url, port, tokenFile] = await waitForLine(
        child,
        /listening on (wss:\/\/127\.0\.0\.1:(\d+)#sha256=[0-9a-f]{64}) \(token file (\S+)\)\n/,
      );
      expect(Number(port)).toBeGreaterThan(0);
      expect(tokenFile).toBe(join(stateDir, 'ws-token'));
      expect((await stat(tokenFile!)).mode & 0o777).toBe(0o600);

      const ok = await s.bin(['invoke', '-c', url!, '--', 'echo hello'], {
        env: { RJOB_WS_TOKEN_FILE: tokenFile },
      });
      expect(ok).toEqual({ code: 0, stdout: `[${url}] hello\n`, stderr: '' });

      const wrong = join(s.dir, 'wrong-token');
      await writeFile(wrong, 'x'.repeat(43), { mode: 0o600 });
      const refused = await s.bin(['invoke', '-c', url!, '--', 'echo hello'], {
        env: { RJOB_WS_TOKEN_FILE: wrong },
      });
      expect(refused.code).toBe(ExitCode.Unreachable);
      expect(refused.stdout).toBe('');
      expect(refused.stderr).toMatch(/^rjob: [^\n]*\(ERR_UNAUTHORIZED\)\n$/);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
  });

  it('generates its certificate without the openssl binary (none on PATH)', async () => {
    await using s = await sandbox();
    // A PATH with every program of the real one except openssl.
    const bin = join(s.dir, 'bin-without-openssl');
    await mkdir(bin);
    for (const dir of (process.env.PATH ?? '').split(delimiter)) {
      for (const name of await readdir(dir).catch(() => [])) {
        if (name !== 'openssl') await symlink(join(dir, name), join(bin, name)).catch(() => {});
      }
    }
    const env = { ...s.env, PATH: bin };
    const stateDir = join(s.dir, 'ws-agent');
    const child = spawn(
      process.execPath,
      [BIN, 'agent', '--listen', 'wss://127.0.0.1:0', '--state-dir', stateDir],
      {
        cwd: s.dir,
        env,
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      const [, url, tokenFile] = await waitForLine(
        child,
        /listening on (wss:\/\/127\.0\.0\.1:\d+#sha256=[0-9a-f]{64}) \(token file (\S+)\)\n/,
      );
      const ok = await s.bin(['invoke', '-c', url!, '--', 'echo hello'], {
        env: { PATH: bin, RJOB_WS_TOKEN_FILE: tokenFile },
      });
      expect(ok).toEqual({ code: 0, stdout: `[${url}] hello\n`, stderr: '' });
      expect((await stat(join(stateDir, 'ws-tls', 'key.pem'))).mode & 0o777).toBe(0o600);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
  });

  it('refuses plain ws:// on a non-loopback address without --insecure', async () => {
    await using s = await sandbox();
    const out = await s.bin(['agent', '--listen', 'ws://0.0.0.0:0', '--state-dir', join(s.dir, 'ws-agent')]);
    expect(out.code).toBe(ExitCode.Usage);
    expect(out.stderr).toMatch(/^rjob: [^\n]*\(ERR_WS_INSECURE\)\n$/);
  });
});
