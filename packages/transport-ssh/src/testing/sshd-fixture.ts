import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Where Debian/Ubuntu install the OpenSSH server; sshd insists on an absolute path to re-exec. */
export const SSHD_PATH = '/usr/sbin/sshd';
/** Test user the fixture logs in as. */
export const SSHD_TEST_USER = 'rjobtest';

export interface StartSshdOptions {
  /** Loopback address to listen on; use 127.0.0.2, 127.0.0.3, ... for several hosts. Default `127.0.0.1`. */
  address?: string;
  /** Port to listen on. Default: a free port on `address`. */
  port?: number;
  /** Account to let in. Created on first use (`useradd -m -s /bin/sh`). Default `rjobtest`. */
  user?: string;
  /**
   * Existing host private keys to serve (the same "host" restarted, or two hosts sharing a key).
   * Default: a fresh ed25519 key.
   */
  hostKeyFiles?: string[];
  /**
   * Existing client private key whose `.pub` sits beside it, so several fixtures accept one key.
   * Default: a fresh ed25519 key per fixture.
   */
  clientKeyFile?: string;
  /**
   * Sets this password for `user` (`chpasswd`) and turns PasswordAuthentication on. Use a user of
   * its own (not `rjobtest`): `stop()` locks the password again (`usermod -p '*'`), and one such
   * fixture per user may run at a time. Default none (public keys only).
   */
  password?: string;
  /**
   * Turns keyboard-interactive authentication on. sshd offers it on Linux only through PAM, so
   * this also sets `UsePAM yes` (the system's /etc/pam.d/sshd, whose pam_unix asks for the
   * password as a keyboard-interactive prompt). Default false.
   */
  keyboardInteractive?: boolean;
  /** Extra `Keyword value` lines appended to sshd_config. Default none. */
  extraConfig?: string[];
  /** Parent of the fixture's temp dir. Default `os.tmpdir()`. */
  tmpRoot?: string;
  /** How long to wait for sshd to greet, in milliseconds. Default 10 000. */
  startTimeoutMs?: number;
}

export interface SshdHostKey {
  /** Path of the private key file. */
  path: string;
  /** Key type as in known_hosts, e.g. `ssh-ed25519`. */
  type: string;
  /** Public key as `type base64`, without comment. */
  publicKey: string;
}

export interface SshdFixture extends AsyncDisposable {
  host: string;
  port: number;
  user: string;
  /** Temp dir holding config, keys and pid file; removed by `stop()`. */
  dir: string;
  hostKeys: SshdHostKey[];
  /** A known_hosts line for this server (`[host]:port type base64`), plain form. */
  knownHostsLine: string;
  /** Private key that `user` may log in with. */
  clientKeyPath: string;
  /** Public half of `clientKeyPath`, as in authorized_keys. */
  clientPublicKey: string;
  /** Pid of the listening sshd. */
  pid: number;
  /** What sshd has logged so far (it runs with `-e`), for failure messages. */
  logs(): string;
  /** Pids of the per-connection sshd processes and everything under them. */
  connectionPids(): number[];
  /** Ends sshd, every process it started, and removes `dir`. Idempotent. */
  stop(): Promise<void>;
}

const running = new Set<{ pid: number; dir: string; passwordUser?: string }>();
let exitHookInstalled = false;

/** Last resort if a test process exits without stopping its fixtures: sync kill + rm. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const entry of running) {
      for (const pid of [...descendantPids(entry.pid), entry.pid]) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {}
      }
      rmSync(entry.dir, { recursive: true, force: true });
      if (entry.passwordUser !== undefined) lockPasswordSync(entry.passwordUser);
    }
  });
}

/** Back to the fixture's usual state: no password login (`*` is not locked, so keys still work). */
function lockPasswordSync(user: string): void {
  try {
    execFileSync('usermod', ['-p', '*', user], { stdio: 'ignore' });
  } catch {}
}

async function setPassword(user: string, password: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const child = spawn('chpasswd', [], { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (s: string) => (stderr += s));
    child.once('error', reject);
    child.once('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`chpasswd for ${user} failed (${code}): ${stderr.trim()}`)),
    );
    // On stdin, never on a command line: other processes can read argv.
    child.stdin?.end(`${user}:${password}\n`);
  });
}

/**
 * Why sshd tests cannot run here, or `undefined` when they can. In CI (`process.env.CI`) a missing
 * sshd or missing root throws, so the suite fails loudly instead of silently skipping.
 */
export function sshdUnavailableReason(): string | undefined {
  let reason: string | undefined;
  if (!existsSync(SSHD_PATH)) reason = `${SSHD_PATH} not found (apt-get install openssh-server)`;
  else if (process.getuid?.() !== 0) reason = 'the sshd fixture needs root';
  if (reason === undefined) return undefined;
  if (process.env.CI) throw new Error(`sshd fixture unavailable in CI: ${reason}`);
  console.warn(`\n!!! SKIPPING sshd tests: ${reason} !!!\n`);
  return reason;
}

/** All processes below `rootPid`, found through /proc (sshd's children call setsid, so no group kill). */
export function descendantPids(rootPid: number): number[] {
  const children = new Map<number, number[]>();
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return [];
  }
  for (const name of entries) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue;
    }
    // The command name is in parentheses and may itself hold spaces or parentheses.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ppid = Number(fields[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(name));
    children.set(ppid, list);
  }
  const out: number[] = [];
  const queue = [rootPid];
  while (queue.length > 0) {
    const pid = queue.shift()!;
    for (const child of children.get(pid) ?? []) {
      out.push(child);
      queue.push(child);
    }
  }
  return out;
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    // Already gone.
  }
}

/** Alive and not a zombie. */
function isLive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return false;
  }
}

/**
 * Stops (SIGSTOP) a process and everything below it, rescanning until nothing new appears, so no
 * process can fork or start a session between the scan and the kill. Returns every pid stopped.
 */
function freezeTree(rootPid: number): number[] {
  const frozen = new Set<number>();
  for (let round = 0; round < 10; round++) {
    const found = [rootPid, ...descendantPids(rootPid)].filter((pid) => !frozen.has(pid));
    if (found.length === 0) break;
    for (const pid of found) {
      signal(pid, 'SIGSTOP');
      frozen.add(pid);
    }
  }
  return [...frozen];
}

async function ensureUser(user: string): Promise<string> {
  // Several test workers may race to create the user; useradd then fails on the lock or "exists".
  for (let attempt = 0; ; attempt++) {
    try {
      const { stdout } = await run('getent', ['passwd', user]);
      const home = stdout.trim().split(':')[5] ?? `/home/${user}`;
      // With UsePAM no, sshd refuses accounts whose password field is locked ('!').
      const { stdout: shadow } = await run('getent', ['shadow', user]).catch(() => ({ stdout: '' }));
      if (shadow.split(':')[1]?.startsWith('!') !== false) await run('usermod', ['-p', '*', user]);
      return home;
    } catch (error) {
      if (attempt >= 20) throw error;
    }
    try {
      await run('useradd', ['-m', '-s', '/bin/sh', user]);
    } catch {
      await new Promise((r) => setTimeout(r, 100 + Math.random() * 200));
    }
  }
}

function freePort(address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, address, () => {
      const info = server.address();
      const port = typeof info === 'object' && info !== null ? info.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Resolves once something on host:port sends an SSH banner. */
function sshBanner(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port });
    let data = '';
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(2000, () => done(false));
    socket.on('data', (chunk) => {
      data += chunk.toString('latin1');
      if (data.includes('\n')) done(data.startsWith('SSH-'));
    });
    socket.on('error', () => done(false));
    socket.on('close', () => done(data.startsWith('SSH-')));
  });
}

async function keygen(path: string, comment: string): Promise<void> {
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', path]);
}

async function publicKeyOf(privatePath: string): Promise<string> {
  const { stdout } = await run('ssh-keygen', ['-y', '-f', privatePath]);
  return stdout.trim().split(/\s+/).slice(0, 2).join(' ');
}

/**
 * Starts OpenSSH sshd on a loopback address, as root, with its own config, host key and
 * authorized_keys in a temp dir (DESIGN §7). Stop it with `stop()` or `await using`.
 */
export async function startSshd(options: StartSshdOptions = {}): Promise<SshdFixture> {
  const address = options.address ?? '127.0.0.1';
  const user = options.user ?? SSHD_TEST_USER;
  const startTimeoutMs = options.startTimeoutMs ?? 10_000;
  await ensureUser(user);
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 });

  const dir = await mkdtemp(join(options.tmpRoot ?? tmpdir(), 'rjob-sshd-'));
  installExitHook();
  const tracked: { pid: number; dir: string; passwordUser?: string } = { pid: 0, dir };
  running.add(tracked);
  let child: ChildProcess | undefined;
  try {
    if (options.password !== undefined) {
      if (user === SSHD_TEST_USER) throw new Error(`give a password fixture a user of its own, not ${user}`);
      tracked.passwordUser = user;
      await setPassword(user, options.password);
    }
    const pam = options.keyboardInteractive === true;
    // sshd reads authorized_keys as the target user, so the dir must be traversable by it.
    await chmod(dir, 0o755);
    const hostKeyFiles = options.hostKeyFiles ?? [join(dir, 'ssh_host_ed25519_key')];
    if (options.hostKeyFiles === undefined) await keygen(hostKeyFiles[0]!, `rjob-test-host@${address}`);
    const hostKeys: SshdHostKey[] = [];
    for (const path of hostKeyFiles) {
      const publicKey = await publicKeyOf(path);
      hostKeys.push({ path, type: publicKey.split(' ')[0]!, publicKey });
    }
    let clientKeyPath = options.clientKeyFile;
    if (clientKeyPath === undefined) {
      clientKeyPath = join(dir, 'client_ed25519');
      await keygen(clientKeyPath, 'rjob-test-client');
    }
    const clientPublicKey = (await readFile(`${clientKeyPath}.pub`, 'utf8')).trim();
    const authorizedKeys = join(dir, 'authorized_keys');
    await writeFile(authorizedKeys, `${clientPublicKey}\n`, { mode: 0o644 });
    await chmod(authorizedKeys, 0o644);

    const logLines: string[] = [];
    for (let attempt = 0; ; attempt++) {
      const port = options.port ?? (await freePort(address));
      const configPath = join(dir, 'sshd_config');
      const config = [
        `ListenAddress ${address}`,
        `Port ${port}`,
        ...hostKeys.map((k) => `HostKey ${k.path}`),
        `PidFile ${join(dir, 'sshd.pid')}`,
        `UsePAM ${pam ? 'yes' : 'no'}`,
        `PasswordAuthentication ${options.password !== undefined ? 'yes' : 'no'}`,
        `KbdInteractiveAuthentication ${pam ? 'yes' : 'no'}`,
        'PubkeyAuthentication yes',
        `AuthorizedKeysFile ${authorizedKeys}`,
        // The temp dir lives under world-writable /tmp, which StrictModes would reject.
        'StrictModes no',
        `AllowUsers ${user}`,
        'PermitRootLogin no',
        'PrintMotd no',
        'Subsystem sftp internal-sftp',
        ...(options.extraConfig ?? []),
        '',
      ].join('\n');
      await writeFile(configPath, config, { mode: 0o600 });
      logLines.length = 0;
      child = spawn(SSHD_PATH, ['-D', '-e', '-f', configPath], { stdio: ['ignore', 'ignore', 'pipe'] });
      tracked.pid = child.pid ?? 0;
      child.stderr?.setEncoding('utf8');
      child.stderr?.on('data', (s: string) => logLines.push(s));
      const exited = new Promise<void>((resolve) => child!.once('exit', () => resolve()));
      let exitedEarly = false;
      void exited.then(() => (exitedEarly = true));
      const deadline = Date.now() + startTimeoutMs;
      let up = false;
      while (!exitedEarly && Date.now() < deadline) {
        if (await sshBanner(address, port)) {
          up = true;
          break;
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      if (up) {
        const proc = child;
        let stopping: Promise<void> | undefined;
        const stop = () => {
          stopping ??= (async () => {
            const pids = freezeTree(proc.pid!);
            for (const pid of pids) signal(pid, 'SIGKILL');
            if (proc.exitCode === null && proc.signalCode === null) await exited;
            // SIGKILL is delivered asynchronously; wait until the tree is really gone (zombies
            // reparented to pid 1 are its to reap, and no longer run anything).
            const deadline = Date.now() + 5000;
            while (pids.some(isLive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
            running.delete(tracked);
            if (tracked.passwordUser !== undefined) await run('usermod', ['-p', '*', tracked.passwordUser]);
            await rm(dir, { recursive: true, force: true });
          })();
          return stopping;
        };
        const hostKey = hostKeys[0]!;
        return {
          host: address,
          port,
          user,
          dir,
          hostKeys,
          knownHostsLine: `[${address}]:${port} ${hostKey.publicKey}`,
          clientKeyPath,
          clientPublicKey,
          pid: proc.pid!,
          logs: () => logLines.join(''),
          connectionPids: () => descendantPids(proc.pid!),
          stop,
          [Symbol.asyncDispose]: stop,
        };
      }
      if (!exitedEarly) {
        child.kill('SIGKILL');
        await exited;
        throw new Error(
          `sshd on ${address}:${port} did not start in ${startTimeoutMs} ms:\n${logLines.join('')}`,
        );
      }
      await exited;
      // Another process may have taken the port between probing and binding: try a new one.
      const log = logLines.join('');
      if (options.port === undefined && attempt < 3 && /Bind to port|Address already in use/i.test(log))
        continue;
      throw new Error(`sshd on ${address}:${port} exited at start:\n${log}`);
    }
  } catch (error) {
    if (child?.pid !== undefined && child.exitCode === null) child.kill('SIGKILL');
    running.delete(tracked);
    if (tracked.passwordUser !== undefined) lockPasswordSync(tracked.passwordUser);
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

/**
 * Starts one sshd per address (DESIGN §7: several "hosts" on one machine, 127.0.0.2, 127.0.0.3,
 * ...), all letting in the same user with the same client key, so one ssh_config reaches them all.
 * Each has its own host key, as separate machines would. On any failure the ones already started
 * are stopped. Stop them all with `stopAll()` or `await using`.
 */
export async function startSshds(
  addresses: string[],
  options: Omit<StartSshdOptions, 'address' | 'port' | 'clientKeyFile'> = {},
): Promise<SshdFixture[] & AsyncDisposable & { stopAll(): Promise<void> }> {
  const started: SshdFixture[] = [];
  const stopAll = async (): Promise<void> => {
    // The first fixture's dir holds the shared client key: stop it last.
    await Promise.all(started.slice(1).map((f) => f.stop()));
    await started[0]?.stop();
  };
  try {
    if (addresses.length > 0) {
      started.push(await startSshd({ ...options, address: addresses[0]! }));
      const clientKeyFile = started[0]!.clientKeyPath;
      // The rest in parallel: each waits mostly on ssh-keygen and sshd's own start.
      const rest = await Promise.allSettled(
        addresses.slice(1).map((address) => startSshd({ ...options, address, clientKeyFile })),
      );
      for (const r of rest) if (r.status === 'fulfilled') started.push(r.value);
      const failed = rest.find((r) => r.status === 'rejected');
      if (failed) throw (failed as PromiseRejectedResult).reason;
      // Keep the caller's order, whatever order they came up in.
      started.sort((a, b) => addresses.indexOf(a.host) - addresses.indexOf(b.host));
    }
  } catch (error) {
    await stopAll();
    throw error;
  }
  return Object.assign(started, { stopAll, [Symbol.asyncDispose]: stopAll });
}
