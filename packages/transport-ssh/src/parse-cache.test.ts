/**
 * The parsed ssh_config and known_hosts files are shared: the hosts of a fan-out, resolved and
 * verified at once, read and parse each file once; a changed file is read again; a file that could
 * not be read is not remembered.
 */
import * as fsPromises from 'node:fs/promises';
import { mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { readKnownHostsFiles } from './known-hosts.js';
import { resolveSshConfig } from './ssh-config.js';

vi.mock('node:fs/promises', async (importOriginal) => {
  const original = await importOriginal<typeof import('node:fs/promises')>();
  return { ...original, readFile: vi.fn(original.readFile) };
});

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rjob-sshcfg-cache-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const reads = (file: string) =>
  vi.mocked(fsPromises.readFile).mock.calls.filter(([path]) => path === file).length;

describe('ssh_config parse cache', () => {
  it('reads a config once for 200 hosts resolved at once, and again once it changed', async () => {
    const file = join(dir, 'config');
    const aliases = Array.from({ length: 200 }, (_, i) => `h${i}`);
    await writeFile(
      file,
      aliases.map((a, i) => `Host ${a}\n  HostName 10.0.${i >> 8}.${i & 255}\n`).join(''),
    );
    const resolve = (alias: string) =>
      resolveSshConfig(alias, { configFile: file, systemConfigFile: null, home: dir });

    const hosts = await Promise.all(aliases.map(resolve));
    expect(hosts.map((h) => h.hostName)).toEqual(aliases.map((_, i) => `10.0.${i >> 8}.${i & 255}`));
    expect(reads(file)).toBe(1);
    await resolve('h7');
    expect(reads(file)).toBe(1);

    // Edited (another size and mtime): read again, and the new value wins.
    await writeFile(file, 'Host h7\n  HostName edited.example\n');
    await utimes(file, new Date(), new Date(Date.now() + 5_000));
    expect((await resolve('h7')).hostName).toBe('edited.example');
    expect(reads(file)).toBe(2);
  });

  it('does not keep a failed read: the next resolution reads the file again', async () => {
    const file = join(dir, 'flaky');
    await writeFile(file, 'Host a\n  HostName a.example\n');
    vi.mocked(fsPromises.readFile).mockRejectedValueOnce(Object.assign(new Error('EIO'), { code: 'EIO' }));
    await expect(
      resolveSshConfig('a', { configFile: file, systemConfigFile: null, home: dir }),
    ).rejects.toMatchObject({ code: 'ERR_SSH_CONFIG_INVALID' });
    expect(
      (await resolveSshConfig('a', { configFile: file, systemConfigFile: null, home: dir })).hostName,
    ).toBe('a.example');
  });

  it('reads known_hosts once for 200 verifications at once, again after a line is added, and skips a missing file', async () => {
    const file = join(dir, 'known_hosts');
    const key = 'AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl';
    await writeFile(file, `host1 ssh-ed25519 ${key}\n`);
    const missing = join(dir, 'no_known_hosts');
    const all = await Promise.all(Array.from({ length: 200 }, () => readKnownHostsFiles([file, missing])));
    for (const parsed of all) expect(parsed.entries.map((e) => e.hosts)).toEqual(['host1']);
    expect(reads(file)).toBe(1);

    await writeFile(file, `host2 ssh-ed25519 ${key}\n`, { flag: 'a' });
    expect((await readKnownHostsFiles([file])).entries.map((e) => e.hosts)).toEqual(['host1', 'host2']);
    expect(reads(file)).toBe(2);
  });
});
