/**
 * Host inventories and host patterns for `-c @FILE[:PATTERN]` and `--limit PATTERN`.
 *
 * The inventory format is INI-like, as Ansible's:
 *
 * ```
 * # hosts before any section are ungrouped
 * bastion
 * [web]
 * web[01:20].example.com      # ranges: numeric (zero-padded as written) or letters, [a:f]
 * [db]
 * db1
 * db2
 * [prod:children]             # a group made of other groups
 * web
 * db
 * ```
 *
 * A host line's first word is the host (anything `-c` takes: an alias, user@host:port, a URL); more
 * words on the line (Ansible's `key=value` variables) are ignored. `[NAME:vars]` sections are
 * skipped. `all` names every host, `ungrouped` the hosts in no group. A plain list of hosts, one a
 * line, is an inventory too.
 *
 * A pattern is terms separated by `:` or `,`: a host, a group, or a glob over either (`web*`,
 * `db?`); `&TERM` keeps only hosts also in TERM; `!TERM` removes TERM's hosts. So `web:db` is the
 * union, `prod:&web` the web hosts of prod, `all:!web07`, `web*:!web0[1-3]` everything but those.
 */
import { readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { type CliIo, usageError } from './io.js';

export interface Inventory {
  /** Every host, in file order, once. */
  hosts: string[];
  /** Group name → its hosts, children included, in file order. */
  groups: Map<string, string[]>;
}

interface RawGroup {
  hosts: string[];
  children: string[];
}

/** Parses inventory text; `file` names it in errors. */
export function parseInventory(text: string, file = '<inventory>'): Inventory {
  const raw = new Map<string, RawGroup>();
  const order: string[] = [];
  const seen = new Set<string>();
  const group = (name: string): RawGroup => {
    let g = raw.get(name);
    if (!g) {
      g = { hosts: [], children: [] };
      raw.set(name, g);
    }
    return g;
  };
  let section: { name: string; kind: 'hosts' | 'children' | 'vars' } | undefined;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/(^|\s)[#;].*$/, '').trim();
    if (!line) continue;
    const header = /^\[([^\]:\s]+)(?::(children|vars))?\]$/.exec(line);
    if (header) {
      const kind = (header[2] as 'children' | 'vars' | undefined) ?? 'hosts';
      section = { name: header[1]!, kind };
      if (kind !== 'vars') group(section.name);
      continue;
    }
    if (line.startsWith('[') && !/^\[[^\]]*\]\S/.test(line)) {
      throw usageError(`${file} line ${i + 1}: bad section header ${line}`);
    }
    if (section?.kind === 'vars') continue;
    const word = line.split(/\s+/)[0]!;
    if (section?.kind === 'children') {
      group(section.name).children.push(word);
      continue;
    }
    for (const host of expandRange(word, file, i + 1)) {
      if (!seen.has(host)) {
        seen.add(host);
        order.push(host);
      }
      if (section) group(section.name).hosts.push(host);
    }
  }
  const groups = new Map<string, string[]>();
  const resolving = new Set<string>();
  const members = (name: string): string[] => {
    const done = groups.get(name);
    if (done) return done;
    const g = raw.get(name);
    if (!g) throw usageError(`${file}: group ${name} is used as a child but never defined`);
    if (resolving.has(name)) throw usageError(`${file}: group ${name} contains itself`);
    resolving.add(name);
    const out = unique([...g.hosts, ...g.children.flatMap((child) => members(child))]);
    resolving.delete(name);
    groups.set(name, out);
    return out;
  };
  for (const name of raw.keys()) members(name);
  const grouped = new Set([...groups.values()].flat());
  groups.set('all', order);
  groups.set(
    'ungrouped',
    order.filter((h) => !grouped.has(h)),
  );
  return { hosts: order, groups };
}

/** `web[01:03]` → web01 web02 web03; `[a:c]` → a b c. A word without a range is itself. */
export function expandRange(word: string, file = '<inventory>', line = 0): string[] {
  const m = /^(.*?)\[([0-9]+|[a-zA-Z]):([0-9]+|[a-zA-Z])\](.*)$/.exec(word);
  if (!m) return [word];
  const [, before, from, to, after] = m as unknown as [string, string, string, string, string];
  const rest = expandRange(after, file, line);
  const out: string[] = [];
  const numeric = /^[0-9]+$/.test(from) && /^[0-9]+$/.test(to);
  if (!numeric && (/^[0-9]/.test(from) || /^[0-9]/.test(to))) {
    throw usageError(`${file} line ${line}: a range is numbers or letters, not both: ${word}`);
  }
  const start = numeric ? Number(from) : from.charCodeAt(0);
  const end = numeric ? Number(to) : to.charCodeAt(0);
  if (end < start) throw usageError(`${file} line ${line}: range ${from}:${to} runs backwards`);
  if (end - start > 100_000) throw usageError(`${file} line ${line}: range ${from}:${to} is too large`);
  const width = numeric && from.startsWith('0') ? from.length : 0;
  for (let n = start; n <= end; n++) {
    const item = numeric ? String(n).padStart(width, '0') : String.fromCharCode(n);
    for (const tail of rest) out.push(`${before}${item}${tail}`);
  }
  return out;
}

function unique(items: string[]): string[] {
  return [...new Set(items)];
}

function globToRegExp(glob: string): RegExp {
  let out = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') out += '.*';
    else if (c === '?') out += '.';
    else if (c === '[') {
      const end = glob.indexOf(']', i + 1);
      if (end < 0) out += '\\[';
      else {
        const body = glob.slice(i + 1, end).replace(/\\/g, '\\\\');
        out += `[${body.startsWith('!') ? `^${body.slice(1)}` : body}]`;
        i = end;
      }
    } else out += c.replace(/[.+^${}()|\\/]/g, '\\$&');
  }
  return new RegExp(`^${out}$`);
}

/**
 * The hosts of `hosts` (in their order) that `pattern` selects. A term names a group of
 * `inventory` (its hosts), else a host; a glob matches group names and host names.
 */
export function selectHosts(hosts: readonly string[], pattern: string, inventory?: Inventory): string[] {
  const terms = pattern
    .split(/[:,]/)
    .map((t) => t.trim())
    .filter(Boolean);
  if (terms.length === 0) throw usageError(`empty host pattern '${pattern}'`);
  const termHosts = (term: string): Set<string> => {
    if (term === 'all' || term === '*') return new Set(hosts);
    const exact = inventory?.groups.get(term);
    if (exact) return new Set(exact);
    if (!/[*?[]/.test(term)) return new Set(hosts.includes(term) ? [term] : []);
    const re = globToRegExp(term);
    const out = new Set(hosts.filter((h) => re.test(h)));
    for (const [name, members] of inventory?.groups ?? []) {
      if (name !== 'all' && name !== 'ungrouped' && re.test(name)) for (const h of members) out.add(h);
    }
    return out;
  };
  const union = new Set<string>();
  const intersections: Set<string>[] = [];
  const exclusions: Set<string>[] = [];
  for (const term of terms) {
    if (term.startsWith('!')) exclusions.push(termHosts(term.slice(1)));
    else if (term.startsWith('&')) intersections.push(termHosts(term.slice(1)));
    else for (const h of termHosts(term)) union.add(h);
  }
  // Only exclusions or intersections: they apply to every host given.
  const base = union.size === 0 && terms.every((t) => /^[!&]/.test(t)) ? new Set(hosts) : union;
  return hosts.filter(
    (h) => base.has(h) && intersections.every((s) => s.has(h)) && !exclusions.some((s) => s.has(h)),
  );
}

export interface ExpandedHosts {
  hosts: string[];
  /** The inventories read (merged), for `--limit` by group. */
  inventory: Inventory;
}

/**
 * `-c a,b,@hosts.txt,@inventory.ini:web`: commas split; `@FILE` reads every host of an inventory
 * (or plain host list); `@FILE:PATTERN` the hosts PATTERN selects there.
 */
export async function expandHosts(values: readonly string[], io: CliIo): Promise<ExpandedHosts> {
  const out: string[] = [];
  const merged: Inventory = { hosts: [], groups: new Map() };
  for (const value of values) {
    for (const part of value.split(',')) {
      const item = part.trim();
      if (!item) continue;
      if (!item.startsWith('@')) {
        out.push(item);
        continue;
      }
      const { file, pattern } = await splitFileSpec(item.slice(1), io.cwd);
      const text = await readFile(file, 'utf8').catch(() => {
        throw usageError(`cannot read the host list ${file}`);
      });
      const inventory = parseInventory(text, file);
      for (const [name, members] of inventory.groups) {
        merged.groups.set(name, unique([...(merged.groups.get(name) ?? []), ...members]));
      }
      if (pattern !== undefined && !/[*?[!&]/.test(pattern)) {
        // A plain name that is neither a group nor a host of the file is a typo, not an empty set.
        for (const term of pattern.split(':').filter(Boolean)) {
          if (!inventory.groups.has(term) && !inventory.hosts.includes(term)) {
            throw usageError(`${file} has no group or host named ${term}`);
          }
        }
      }
      out.push(
        ...(pattern === undefined ? inventory.hosts : selectHosts(inventory.hosts, pattern, inventory)),
      );
    }
  }
  merged.hosts = unique(out);
  if (out.length === 0) throw usageError('no computer given');
  return { hosts: merged.hosts, inventory: merged };
}

/** `inv.ini:web` → the file and the pattern; a path that exists as given wins over a split. */
async function splitFileSpec(spec: string, cwd: string): Promise<{ file: string; pattern?: string }> {
  const whole = resolve(cwd, spec);
  const colon = spec.indexOf(':');
  if (colon < 0) return { file: whole };
  const exists = await stat(whole).then(
    (s) => s.isFile(),
    () => false,
  );
  if (exists) return { file: whole };
  return { file: resolve(cwd, spec.slice(0, colon)), pattern: spec.slice(colon + 1) };
}
