import { spawnSync } from 'node:child_process';
import { readdir, stat } from 'node:fs/promises';
import { homedir, hostname as localHostName, userInfo } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { RjobError } from '@rjob/core';
import { SshErrorCode } from './errors.js';
import { parsedFileCache } from './parsed-files.js';
import { matchPatternList, wildcardMatch } from './host-patterns.js';
import { DEFAULT_GLOBAL_KNOWN_HOSTS_FILES, type StrictHostKeyChecking } from './known-hosts.js';
import { parseSshTarget, type SshTarget } from './ssh-target.js';

export { parseSshTarget, type SshTarget } from './ssh-target.js';

/** A configuration resolved for one host, as `ssh -G` would report the fields we use. */
export interface SshHostConfig {
  /** The name the user gave (what `Host` lines matched). */
  alias: string;
  /** Name or address to connect to, after `HostName` and `%h`; lowercased as ssh does. */
  hostName: string;
  user: string;
  port: number;
  /** Expanded identity files in order; ssh's default list when the config names none. */
  identityFiles: string[];
  /** True when `identityFiles` came from the config or caller rather than ssh's defaults. */
  identityFilesExplicit: boolean;
  /** Jump hosts in order; empty for none. */
  proxyJump: SshTarget[];
  /**
   * `ProxyCommand`, with %h, %p, %r, %n and %% expanded: run through `/bin/sh -c`, its stdin and
   * stdout carry the connection. Undefined for none (or `none`). ssh_config takes whichever of
   * ProxyJump and ProxyCommand comes first; the other is then ignored, as in OpenSSH.
   */
  proxyCommand: string | undefined;
  connectTimeoutSeconds: number | undefined;
  serverAliveIntervalSeconds: number | undefined;
  /** `undefined` when not configured, so the caller can pick the terminal-dependent default. */
  strictHostKeyChecking: StrictHostKeyChecking | undefined;
  userKnownHostsFiles: string[];
  globalKnownHostsFiles: string[];
}

export interface ResolveSshConfigOptions {
  /** User config file. Default `~/.ssh/config`; `null` reads none. */
  configFile?: string | null;
  /** System config file, read after the user's. Default `/etc/ssh/ssh_config`; `null` reads none. */
  systemConfigFile?: string | null;
  /** Home directory for `~`, `%d` and relative `Include`. Default `os.homedir()` (honours `$HOME`). */
  home?: string;
  /** Local user name for `%u`, `Match localuser` and the default remote user. Default the current user. */
  localUser?: string;
  /**
   * Run `Match exec` commands. Default false: such blocks are then treated as not matching
   * (whatever their negation), because a config file should not run programs when a library only
   * wants to know where to connect.
   */
  allowMatchExec?: boolean;
}

interface Statement {
  keyword: string;
  args: string[];
  /** The text after the keyword, as written (ProxyCommand is a shell command, quotes and all). */
  raw: string;
  file: string;
  line: number;
}

function configError(file: string, line: number, why: string): RjobError {
  return new RjobError(SshErrorCode.ConfigInvalid, `${file} line ${line}: ${why}`, {
    details: { file, line },
  });
}

/** Splits one config line into words: double or single quotes group, `#` at a word start ends the line. */
function splitWords(text: string, file: string, line: number): string[] {
  const words: string[] = [];
  let i = 0;
  while (i < text.length) {
    while (i < text.length && (text[i] === ' ' || text[i] === '\t')) i++;
    if (i >= text.length || text[i] === '#') break;
    let word = '';
    while (i < text.length && text[i] !== ' ' && text[i] !== '\t') {
      const c = text[i]!;
      if (c === '"' || c === "'") {
        const end = text.indexOf(c, i + 1);
        if (end < 0) throw configError(file, line, 'unterminated quote');
        word += text.slice(i + 1, end);
        i = end + 1;
      } else if (c === '\\' && i + 1 < text.length) {
        word += text[i + 1];
        i += 2;
      } else {
        word += c;
        i++;
      }
    }
    words.push(word);
  }
  return words;
}

/** Parses ssh_config text into statements (keyword lowercased). Exposed for tests and tools. */
export function parseSshConfigText(text: string, file = '<ssh_config>'): Statement[] {
  const out: Statement[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.replace(/\r$/, '').trim();
    if (raw === '' || raw.startsWith('#')) continue;
    // "Keyword value", "Keyword=value" and "Keyword = value" are all accepted.
    const m = /^([A-Za-z][A-Za-z0-9]*)\s*(?:=\s*|\s+|$)(.*)$/.exec(raw);
    if (!m) throw configError(file, i + 1, `cannot parse '${raw}'`);
    out.push({
      keyword: m[1]!.toLowerCase(),
      args: splitWords(m[2]!, file, i + 1),
      raw: m[2]!,
      file,
      line: i + 1,
    });
  }
  return out;
}

const DEFAULT_IDENTITY_NAMES = [
  'id_rsa',
  'id_ecdsa',
  'id_ecdsa_sk',
  'id_ed25519',
  'id_ed25519_sk',
  'id_xmss',
  'id_dsa',
];

interface Collected {
  hostName?: string;
  user?: string;
  port?: number;
  identityFiles: string[];
  proxyJump?: string;
  proxyCommand?: string;
  connectTimeoutSeconds?: number | null;
  serverAliveIntervalSeconds?: number;
  strictHostKeyChecking?: StrictHostKeyChecking;
  userKnownHostsFiles?: string[];
  globalKnownHostsFiles?: string[];
}

interface Context {
  alias: string;
  home: string;
  localUser: string;
  allowMatchExec: boolean;
  /** Directory that relative `Include` paths are resolved against. */
  includeBase: string;
  values: Collected;
}

function expandTilde(path: string, home: string): string {
  if (path === '~') return home;
  if (path.startsWith('~/')) return join(home, path.slice(2));
  return path;
}

/** OpenSSH percent tokens. Unknown tokens are an error, as in ssh. */
function expandTokens(text: string, tokens: Record<string, string>, where: string): string {
  return text.replace(/%(.)/g, (_all, ch: string) => {
    if (ch === '%') return '%';
    const value = tokens[ch];
    if (value === undefined) {
      throw new RjobError(SshErrorCode.ConfigInvalid, `${where}: unknown token %${ch}`);
    }
    return value;
  });
}

function currentHostName(ctx: Context): string {
  const value = ctx.values.hostName;
  return value === undefined ? ctx.alias : value.replaceAll('%h', ctx.alias).replaceAll('%%', '%');
}

function tokenTable(ctx: Context, hostName: string, port: number, user: string): Record<string, string> {
  const local = localHostName();
  return {
    d: ctx.home,
    h: hostName,
    n: ctx.alias,
    p: String(port),
    r: user,
    u: ctx.localUser,
    i: String(process.getuid?.() ?? ''),
    L: local.split('.')[0] ?? local,
    l: local,
  };
}

function evaluateMatch(ctx: Context, st: Statement): boolean {
  const args = [...st.args];
  if (args.length === 0) throw configError(st.file, st.line, 'Match needs criteria');
  let result = true;
  while (args.length > 0) {
    let criterion = args.shift()!.toLowerCase();
    const negated = criterion.startsWith('!');
    if (negated) criterion = criterion.slice(1);
    if (criterion === 'all') {
      if (negated) result = false;
      continue;
    }
    const arg = args.shift();
    if (arg === undefined) throw configError(st.file, st.line, `Match ${criterion} needs an argument`);
    let hit: boolean;
    switch (criterion) {
      case 'host':
        hit = matchPatternList(currentHostName(ctx), arg) === 'match';
        break;
      case 'originalhost':
        hit = matchPatternList(ctx.alias, arg, false) === 'match';
        break;
      case 'user':
        hit = matchPatternList(ctx.values.user ?? ctx.localUser, arg, false) === 'match';
        break;
      case 'localuser':
        hit = matchPatternList(ctx.localUser, arg, false) === 'match';
        break;
      case 'exec': {
        if (!ctx.allowMatchExec) return false;
        const hostName = currentHostName(ctx);
        const port = ctx.values.port ?? 22;
        const user = ctx.values.user ?? ctx.localUser;
        const command = expandTokens(arg, tokenTable(ctx, hostName, port, user), `${st.file}:${st.line}`);
        hit = spawnSync('/bin/sh', ['-c', command], { stdio: 'ignore' }).status === 0;
        break;
      }
      default:
        // canonical, final, localnetwork, tagged, ...: not supported, so never claim a match.
        return false;
    }
    if (hit === negated) result = false;
  }
  return result;
}

function hostLineMatches(alias: string, patterns: string[]): boolean {
  let positive = false;
  for (const raw of patterns) {
    const negated = raw.startsWith('!');
    const pattern = negated ? raw.slice(1) : raw;
    if (!wildcardMatch(alias, pattern)) continue;
    if (negated) return false;
    positive = true;
  }
  return positive;
}

function setOnce<K extends keyof Collected>(values: Collected, key: K, value: Collected[K]): void {
  if (values[key] === undefined) values[key] = value;
}

function parseNumber(st: Statement, min: number, max: number): number {
  const text = st.args[0] ?? '';
  if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) {
    throw configError(st.file, st.line, `bad ${st.keyword} '${text}'`);
  }
  return Number(text);
}

async function globPaths(pattern: string): Promise<string[]> {
  if (!/[*?]/.test(pattern)) return [pattern];
  const parts = pattern.split('/');
  let bases = [parts[0] === '' ? '/' : parts[0]!];
  for (const part of parts.slice(1)) {
    if (part === '') continue;
    const next: string[] = [];
    for (const base of bases) {
      if (!/[*?]/.test(part)) {
        next.push(join(base, part));
        continue;
      }
      let names: string[];
      try {
        names = await readdir(base);
      } catch {
        continue;
      }
      for (const name of names.sort()) {
        // As glob(3): a wildcard does not match a leading dot.
        if (name.startsWith('.') && !part.startsWith('.')) continue;
        if (wildcardMatch(name, part)) next.push(join(base, name));
      }
    }
    bases = next;
  }
  return bases;
}

const MAX_INCLUDE_DEPTH = 16;

/** This user's and the system's config files, parsed once while unchanged (parsed-files.ts). */
const parsedConfig = parsedFileCache(parseSshConfigText);

async function configStatements(file: string): Promise<Statement[]> {
  const info = await stat(file);
  if (info.isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
  return parsedConfig(file, info);
}

async function readConfigFile(ctx: Context, file: string, depth: number, mustExist: boolean): Promise<void> {
  let statements: Statement[];
  try {
    statements = await configStatements(file);
  } catch (error) {
    if (RjobError.is(error)) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    if (!mustExist && (code === 'ENOENT' || code === 'EISDIR')) return;
    throw new RjobError(SshErrorCode.ConfigInvalid, `cannot read ssh config ${file}: ${code}`, {
      cause: error,
    });
  }
  let active = true;
  for (const st of statements) {
    if (st.keyword === 'host') {
      active = hostLineMatches(ctx.alias, st.args);
      continue;
    }
    if (st.keyword === 'match') {
      active = evaluateMatch(ctx, st);
      continue;
    }
    if (!active) continue;
    applyStatement(ctx, st);
    if (st.keyword === 'include') {
      if (depth >= MAX_INCLUDE_DEPTH) throw configError(st.file, st.line, 'Include nested too deeply');
      for (const arg of st.args) {
        const expanded = expandTilde(arg, ctx.home);
        const pattern = isAbsolute(expanded) ? expanded : join(ctx.includeBase, expanded);
        for (const path of await globPaths(pattern)) await readConfigFile(ctx, path, depth + 1, false);
      }
    }
  }
}

const STRICT_VALUES: Record<string, StrictHostKeyChecking> = {
  yes: 'yes',
  true: 'yes',
  no: 'no',
  false: 'no',
  off: 'no',
  ask: 'ask',
  'accept-new': 'accept-new',
};

function applyStatement(ctx: Context, st: Statement): void {
  const v = ctx.values;
  const first = st.args[0];
  switch (st.keyword) {
    case 'hostname':
      if (first !== undefined) setOnce(v, 'hostName', first);
      break;
    case 'user':
      if (first !== undefined) setOnce(v, 'user', first);
      break;
    case 'port':
      setOnce(v, 'port', parseNumber(st, 1, 65535));
      break;
    case 'identityfile':
      // Unlike most keywords, every IdentityFile line adds a file.
      for (const arg of st.args) if (!v.identityFiles.includes(arg)) v.identityFiles.push(arg);
      break;
    case 'proxyjump':
      // The first of ProxyJump and ProxyCommand wins; the later one is ignored, as in ssh.
      if (first !== undefined && v.proxyCommand === undefined) setOnce(v, 'proxyJump', first);
      break;
    case 'proxycommand':
      if (st.raw.trim() !== '' && v.proxyJump === undefined) setOnce(v, 'proxyCommand', st.raw.trim());
      break;
    case 'connecttimeout':
      setOnce(v, 'connectTimeoutSeconds', first === 'none' ? null : parseNumber(st, 0, 2 ** 31));
      break;
    case 'serveraliveinterval':
      setOnce(v, 'serverAliveIntervalSeconds', parseNumber(st, 0, 2 ** 31));
      break;
    case 'stricthostkeychecking': {
      const value = STRICT_VALUES[(first ?? '').toLowerCase()];
      if (value === undefined) throw configError(st.file, st.line, `bad StrictHostKeyChecking '${first}'`);
      setOnce(v, 'strictHostKeyChecking', value);
      break;
    }
    case 'userknownhostsfile':
      setOnce(v, 'userKnownHostsFiles', first === 'none' ? [] : st.args);
      break;
    case 'globalknownhostsfile':
      setOnce(v, 'globalKnownHostsFiles', first === 'none' ? [] : st.args);
      break;
    default:
      // Other keywords are valid ssh_config but not used by this client (yet).
      break;
  }
}

/**
 * Resolves the configuration for a target as ssh does: the target's own user and port win, then
 * the user's config, then the system config, each value taken from the first place it appears.
 */
export async function resolveSshConfig(
  target: string | SshTarget,
  options: ResolveSshConfigOptions = {},
): Promise<SshHostConfig> {
  const parsed = typeof target === 'string' ? parseSshTarget(target) : target;
  const home = options.home ?? homedir();
  const localUser = options.localUser ?? userInfo().username;
  const values: Collected = { identityFiles: [] };
  if (parsed.user !== undefined) values.user = parsed.user;
  if (parsed.port !== undefined) values.port = parsed.port;
  const ctx: Context = {
    alias: parsed.host,
    home,
    localUser,
    allowMatchExec: options.allowMatchExec ?? false,
    includeBase: join(home, '.ssh'),
    values,
  };
  const userFile = options.configFile === undefined ? join(home, '.ssh', 'config') : options.configFile;
  if (userFile !== null)
    await readConfigFile(ctx, expandTilde(userFile, home), 0, options.configFile != null);
  const systemFile =
    options.systemConfigFile === undefined ? '/etc/ssh/ssh_config' : options.systemConfigFile;
  if (systemFile !== null) {
    ctx.includeBase = '/etc/ssh';
    await readConfigFile(ctx, systemFile, 0, false);
  }

  const hostName = currentHostName(ctx).toLowerCase();
  const port = values.port ?? 22;
  const user = values.user ?? localUser;
  const tokens = tokenTable(ctx, hostName, port, user);
  const expandPath = (path: string, what: string) => expandTilde(expandTokens(path, tokens, what), home);
  const identityFilesExplicit = values.identityFiles.length > 0;
  const identityFiles = identityFilesExplicit
    ? values.identityFiles.map((f) => expandPath(f, 'IdentityFile'))
    : DEFAULT_IDENTITY_NAMES.map((name) => join(home, '.ssh', name));
  const proxyJump =
    values.proxyJump === undefined || values.proxyJump === 'none'
      ? []
      : values.proxyJump.split(',').map((hop) => parseSshTarget(hop));
  const proxyCommand =
    values.proxyCommand === undefined || values.proxyCommand === 'none'
      ? undefined
      : expandTokens(values.proxyCommand, tokens, 'ProxyCommand');
  return {
    alias: parsed.host,
    hostName,
    user,
    port,
    identityFiles,
    identityFilesExplicit,
    proxyJump,
    proxyCommand,
    connectTimeoutSeconds: values.connectTimeoutSeconds ?? undefined,
    serverAliveIntervalSeconds: values.serverAliveIntervalSeconds,
    strictHostKeyChecking: values.strictHostKeyChecking,
    userKnownHostsFiles: (values.userKnownHostsFiles ?? ['~/.ssh/known_hosts', '~/.ssh/known_hosts2']).map(
      (f) => expandPath(f, 'UserKnownHostsFile'),
    ),
    globalKnownHostsFiles: (values.globalKnownHostsFiles ?? [...DEFAULT_GLOBAL_KNOWN_HOSTS_FILES]).map((f) =>
      expandPath(f, 'GlobalKnownHostsFile'),
    ),
  };
}
