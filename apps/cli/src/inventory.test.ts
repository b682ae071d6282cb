import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { expandHosts, expandRange, parseInventory, selectHosts } from './inventory.js';
import type { CliIo } from './io.js';

const INVENTORY = `# the fleet
bastion            ; ungrouped
[web]
web[01:03].example.com  http_port=80
[db]
db1
db2 # primary
[cache]
cache-[a:b]
[prod:children]
web
db
[prod:vars]
ntp=ntp1
`;

const WEB = ['web01.example.com', 'web02.example.com', 'web03.example.com'];

describe('parseInventory', () => {
  it('reads groups, ranges, children, ungrouped hosts; ignores vars and comments', () => {
    const inv = parseInventory(INVENTORY);
    expect(inv.hosts).toEqual(['bastion', ...WEB, 'db1', 'db2', 'cache-a', 'cache-b']);
    expect(inv.groups.get('web')).toEqual(WEB);
    expect(inv.groups.get('db')).toEqual(['db1', 'db2']);
    expect(inv.groups.get('prod')).toEqual([...WEB, 'db1', 'db2']);
    expect(inv.groups.get('ungrouped')).toEqual(['bastion']);
    expect(inv.groups.get('all')).toEqual(inv.hosts);
    expect(inv.groups.has('prod:vars')).toBe(false);
  });

  it('takes a plain host list as an inventory of ungrouped hosts', () => {
    const inv = parseInventory('a\n# comment\nuser@b:2222\n\nws://c:8080/\n');
    expect(inv.hosts).toEqual(['a', 'user@b:2222', 'ws://c:8080/']);
  });

  it('refuses an undefined child group and a cycle with a usage error', () => {
    expect(() => parseInventory('[a:children]\nnope\n', 'inv')).toThrow(/group nope .* never defined/);
    expect(() => parseInventory('[a:children]\nb\n[b:children]\na\n', 'inv')).toThrow(/contains itself/);
    expect(() => parseInventory('[web\nx\n', 'inv')).toThrow(/bad section header/);
  });

  it('expands numeric ranges with their padding, letter ranges, and several ranges', () => {
    expect(expandRange('h[8:10]')).toEqual(['h8', 'h9', 'h10']);
    expect(expandRange('h[08:10]')).toEqual(['h08', 'h09', 'h10']);
    expect(expandRange('r[a:b]-[1:2]')).toEqual(['ra-1', 'ra-2', 'rb-1', 'rb-2']);
    expect(() => expandRange('h[3:1]')).toThrow(/backwards/);
  });
});

describe('selectHosts', () => {
  const inv = parseInventory(INVENTORY);
  const all = inv.hosts;
  it('takes unions, intersections and exclusions of groups, hosts and globs', () => {
    expect(selectHosts(all, 'web', inv)).toEqual(WEB);
    expect(selectHosts(all, 'web:db1', inv)).toEqual([...WEB, 'db1']);
    expect(selectHosts(all, 'web,db1', inv)).toEqual([...WEB, 'db1']);
    expect(selectHosts(all, 'prod:&db', inv)).toEqual(['db1', 'db2']);
    expect(selectHosts(all, 'prod:!web02.example.com', inv)).toEqual([
      'web01.example.com',
      'web03.example.com',
      'db1',
      'db2',
    ]);
    expect(selectHosts(all, 'all:!prod', inv)).toEqual(['bastion', 'cache-a', 'cache-b']);
    expect(selectHosts(all, 'web0[12]*', inv)).toEqual(WEB.slice(0, 2));
    expect(selectHosts(all, 'ca*', inv)).toEqual(['cache-a', 'cache-b']);
    // Only exclusions: from everything given.
    expect(selectHosts(all, '!prod:!bastion', inv)).toEqual(['cache-a', 'cache-b']);
    expect(selectHosts(all, 'nothing-like-this', inv)).toEqual([]);
  });

  it('matches host names alone without an inventory', () => {
    expect(selectHosts(['a1', 'a2', 'b1'], 'a*:!a2')).toEqual(['a1']);
  });
});

describe('expandHosts', () => {
  let dir: string;
  let io: CliIo;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rjob-inv-'));
    io = { cwd: dir } as CliIo;
    await writeFile(join(dir, 'inventory.ini'), INVENTORY);
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads @FILE, @FILE:GROUP and @FILE:PATTERN next to plain hosts', async () => {
    expect((await expandHosts(['@inventory.ini:web', 'extra'], io)).hosts).toEqual([...WEB, 'extra']);
    expect((await expandHosts(['@inventory.ini:prod:!db2'], io)).hosts).toEqual([...WEB, 'db1']);
    const all = await expandHosts(['@inventory.ini'], io);
    expect(all.hosts).toHaveLength(8);
    // The groups come along for --limit.
    expect(selectHosts(all.hosts, 'db', all.inventory)).toEqual(['db1', 'db2']);
  });

  it('says which group is missing, and which file cannot be read', async () => {
    await expect(expandHosts(['@inventory.ini:webb'], io)).rejects.toThrow(/has no group or host named webb/);
    await expect(expandHosts(['@missing.ini'], io)).rejects.toThrow(/cannot read the host list/);
    await expect(expandHosts([','], io)).rejects.toThrow(/no computer given/);
  });
});
