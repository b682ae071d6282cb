import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ErrorCode, RjobError } from '@rjob/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SshErrorCode } from './errors.js';
import { parseSshTarget, resolveSshConfig, type SshHostConfig } from './ssh-config.js';

const run = promisify(execFile);

describe('parseSshTarget', () => {
  it.each([
    ['host', { host: 'host' }],
    ['user@host', { host: 'host', user: 'user' }],
    ['user@host:2222', { host: 'host', user: 'user', port: 2222 }],
    ['host:22', { host: 'host', port: 22 }],
    ['ssh://user@host:2222', { host: 'host', user: 'user', port: 2222 }],
    ['ssh://host/', { host: 'host' }],
    ['SSH://u%40x@host', { host: 'host', user: 'u@x' }],
    ['me@[::1]:2200', { host: '::1', user: 'me', port: 2200 }],
    ['ssh://[fe80::1]:22', { host: 'fe80::1', port: 22 }],
    ['::1', { host: '::1' }],
    ['a@b@host', { host: 'host', user: 'a@b' }],
  ])('%s', (text, expected) => {
    expect(parseSshTarget(text)).toEqual(expected);
  });

  it.each(['', 'user@', '@host', 'host:0', 'host:65536', 'host:x', 'ssh://host/path', '[::1', 'h st'])(
    'rejects %j',
    (text) => {
      expect(() => parseSshTarget(text)).toThrow(
        expect.objectContaining({ code: ErrorCode.InvalidArgument }) as unknown as Error,
      );
    },
  );
});

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rjob-sshcfg-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** `ssh -G` for the fields we resolve; ssh expands `~` with the passwd home, so we do too. */
async function opensshG(file: string, target: string): Promise<Partial<SshHostConfig>> {
  const { stdout } = await run('ssh', ['-G', '-F', file, target]);
  const home = userInfo().homedir;
  const fields = new Map<string, string[]>();
  for (const line of stdout.split('\n')) {
    const space = line.indexOf(' ');
    if (space < 0) continue;
    const key = line.slice(0, space);
    fields.set(key, [...(fields.get(key) ?? []), line.slice(space + 1)]);
  }
  const one = (key: string) => fields.get(key)?.[0];
  const tilde = (p: string) => (p.startsWith('~/') ? join(home, p.slice(2)) : p);
  const strict = one('stricthostkeychecking');
  const timeout = one('connecttimeout');
  const alive = one('serveraliveinterval');
  return {
    hostName: one('hostname')!,
    user: one('user')!,
    port: Number(one('port')),
    identityFiles: (fields.get('identityfile') ?? []).map(tilde),
    connectTimeoutSeconds: timeout === undefined || timeout === 'none' ? undefined : Number(timeout),
    serverAliveIntervalSeconds: alive === undefined || alive === '0' ? undefined : Number(alive),
    strictHostKeyChecking:
      strict === 'true'
        ? 'yes'
        : strict === 'false'
          ? 'no'
          : (strict as SshHostConfig['strictHostKeyChecking']),
    userKnownHostsFiles: (one('userknownhostsfile') ?? '').split(' ').filter(Boolean),
    proxyJump:
      one('proxyjump') === undefined ? [] : (one('proxyjump')!.split(',').map(parseSshTarget) as never),
  };
}

function pick(c: SshHostConfig): Partial<SshHostConfig> {
  return {
    hostName: c.hostName,
    user: c.user,
    port: c.port,
    identityFiles: c.identityFiles,
    connectTimeoutSeconds: c.connectTimeoutSeconds,
    serverAliveIntervalSeconds: c.serverAliveIntervalSeconds,
    // ssh -G prints its default `ask` when unset; we keep `undefined` so callers can tell.
    strictHostKeyChecking: c.strictHostKeyChecking ?? 'ask',
    userKnownHostsFiles: c.userKnownHostsFiles,
    proxyJump: c.proxyJump,
  };
}

describe('resolveSshConfig', () => {
  const config = (extraDir: string) =>
    [
      '# leading comment',
      'Host web',
      '  HostName web.%h.Internal   # trailing comment',
      '  Port 2200',
      '  IdentityFile ~/.ssh/id_web',
      '  IdentityFile "/tmp/with space/key"',
      'Host *.corp !bad.corp',
      '  User corpuser',
      '  ConnectTimeout=7',
      'Host Upper',
      '  Port 3333',
      'Host jump-*',
      '  ProxyJump admin@bastion:2022,ssh://other',
      `Include ${extraDir}/*.conf`,
      'Match host web.*.internal',
      '  StrictHostKeyChecking accept-new',
      '  User matched',
      'Match originalhost x.corp user corpuser',
      '  ServerAliveInterval 9',
      'Match all',
      '  UserKnownHostsFile ~/kh1 /tmp/kh2',
      'Host *',
      '  User fallback',
      '  Port 2201',
      '  StrictHostKeyChecking no',
      '  ServerAliveInterval 30',
      '',
    ].join('\n');

  let file: string;
  beforeAll(async () => {
    const extra = join(dir, 'conf.d');
    await mkdir(extra);
    await writeFile(join(extra, '10-a.conf'), 'Host included\n  HostName inc.example\n  User inc\n');
    await writeFile(join(extra, '.hidden.conf'), 'Host included\n  Port 9\n');
    await writeFile(join(extra, '20-b.conf'), 'Host included\n  User second\n  Port 4444\n');
    file = join(dir, 'config');
    await writeFile(file, config(extra));
  });

  it.each([
    'web',
    'x.corp',
    'bad.corp',
    'Upper',
    'upper',
    'jump-1',
    'included',
    'plain.example',
    'me@web:2022',
  ])('agrees with ssh -G for %s', async (target) => {
    const ours = await resolveSshConfig(target, {
      configFile: file,
      systemConfigFile: null,
      home: userInfo().homedir,
      localUser: userInfo().username,
    });
    expect(pick(ours)).toEqual(await opensshG(file, target.replace(/^(.*)@(.*):(\d+)$/, 'ssh://$1@$2:$3')));
  });

  it('resolves first-obtained values, %h, ~ and several identity files', async () => {
    const c = await resolveSshConfig('web', { configFile: file, systemConfigFile: null, home: '/h' });
    expect(c).toMatchObject({
      alias: 'web',
      hostName: 'web.web.internal',
      port: 2200,
      user: 'matched',
      identityFiles: ['/h/.ssh/id_web', '/tmp/with space/key'],
      identityFilesExplicit: true,
      strictHostKeyChecking: 'accept-new',
      userKnownHostsFiles: ['/h/kh1', '/tmp/kh2'],
    });
    const j = await resolveSshConfig('jump-2', { configFile: file, systemConfigFile: null, home: '/h' });
    expect(j.proxyJump).toEqual([{ host: 'bastion', user: 'admin', port: 2022 }, { host: 'other' }]);
  });

  it('reads ~/.ssh/config and relative Include globs under ~/.ssh by default ($HOME sandbox)', async () => {
    const home = join(dir, 'home');
    await mkdir(join(home, '.ssh', 'config.d'), { recursive: true });
    await writeFile(join(home, '.ssh', 'config'), 'Include config.d/*\nHost *\n  User last\n');
    await writeFile(join(home, '.ssh', 'config.d', 'b'), 'Host box\n  Port 2\n');
    await writeFile(join(home, '.ssh', 'config.d', 'a'), 'Host box\n  Port 1\n  User fromA\n');
    const c = await resolveSshConfig('box', { home, systemConfigFile: null });
    expect(c).toMatchObject({ port: 1, user: 'fromA', identityFilesExplicit: false });
    expect(c.identityFiles[0]).toBe(join(home, '.ssh', 'id_rsa'));
    expect(c.userKnownHostsFiles).toEqual([
      join(home, '.ssh', 'known_hosts'),
      join(home, '.ssh', 'known_hosts2'),
    ]);
    // No config at all is fine: defaults.
    const none = await resolveSshConfig('u@h', { home: join(dir, 'nobody'), systemConfigFile: null });
    expect(none).toMatchObject({ hostName: 'h', user: 'u', port: 22, proxyJump: [] });
  });

  it('never runs Match exec unless allowed', async () => {
    const marker = join(dir, 'exec-ran');
    const execFile = join(dir, 'exec-config');
    await writeFile(execFile, `Match exec "touch ${marker}"\n  Port 1234\nMatch !exec "false"\n  User neg\n`);
    const c = await resolveSshConfig('h', { configFile: execFile, systemConfigFile: null, localUser: 'me' });
    expect(existsSync(marker)).toBe(false);
    expect(c).toMatchObject({ port: 22, user: 'me' });
    const allowed = await resolveSshConfig('h', {
      configFile: execFile,
      systemConfigFile: null,
      localUser: 'me',
      allowMatchExec: true,
    });
    expect(existsSync(marker)).toBe(true);
    expect(allowed).toMatchObject({ port: 1234, user: 'neg' });
  });

  it('the target user and port win over the config', async () => {
    const c = await resolveSshConfig('ssh://me@web:99', { configFile: file, systemConfigFile: null });
    expect(c).toMatchObject({ user: 'me', port: 99, hostName: 'web.web.internal' });
  });

  it('reports bad config with a coded error and file:line', async () => {
    const bad = join(dir, 'bad-config');
    await writeFile(bad, 'Host x\n  Port notanumber\n');
    const error = await resolveSshConfig('x', { configFile: bad, systemConfigFile: null }).catch((e) => e);
    expect(RjobError.hasCode(error, SshErrorCode.ConfigInvalid)).toBe(true);
    expect((error as Error).message).toContain(`${bad} line 2`);
    await expect(
      resolveSshConfig('x', { configFile: join(dir, 'missing'), systemConfigFile: null }),
    ).rejects.toThrow(/cannot read/);
  });
});

describe('ProxyCommand', () => {
  const resolveWith = async (text: string, target: string): Promise<SshHostConfig> => {
    const file = join(dir, `proxy-${Math.random().toString(36).slice(2)}`);
    await writeFile(file, text);
    return resolveSshConfig(target, { configFile: file, systemConfigFile: null, home: dir });
  };

  it('keeps the command as written, with %h %p %r %n and %% expanded', async () => {
    const host = await resolveWith(
      'Host gw-*\n  HostName %h.internal\n  User ops\n  Port 2200\n  ProxyCommand ssh -W "%h:%p" bastion -l %r # %n 100%%\n',
      'gw-1',
    );
    expect(host.proxyCommand).toBe('ssh -W "gw-1.internal:2200" bastion -l ops # gw-1 100%');
    expect(host.proxyJump).toEqual([]);
  });

  it('takes whichever of ProxyJump and ProxyCommand comes first; none turns it off', async () => {
    const jumpFirst = await resolveWith('Host a\n  ProxyJump j1\n  ProxyCommand nc %h %p\n', 'a');
    expect(jumpFirst.proxyJump).toEqual([{ host: 'j1' }]);
    expect(jumpFirst.proxyCommand).toBeUndefined();
    const commandFirst = await resolveWith('Host a\n  ProxyCommand nc %h %p\nHost *\n  ProxyJump j1\n', 'a');
    expect(commandFirst.proxyCommand).toBe('nc a 22');
    expect(commandFirst.proxyJump).toEqual([]);
    const none = await resolveWith('Host a\n  ProxyCommand none\nHost *\n  ProxyCommand nc %h %p\n', 'a');
    expect(none.proxyCommand).toBeUndefined();
  });
});

describe('parsed config reuse', () => {
  it('reads a config file again once it changed', async () => {
    const file = join(dir, 'changing');
    const options = { configFile: file, systemConfigFile: null, home: dir };
    await writeFile(file, 'Host a\n  Port 2201\n');
    expect((await resolveSshConfig('a', options)).port).toBe(2201);
    expect((await resolveSshConfig('a', options)).port).toBe(2201);
    await writeFile(file, 'Host a\n  Port 2202\n  User someone\n');
    expect((await resolveSshConfig('a', options)).port).toBe(2202);
  });
});
