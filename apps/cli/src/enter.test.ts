/**
 * `rjob enter` on a pseudo-terminal, against the local agent (S2's shape): verbs run inside the
 * session, `> FILE` writes where the session is, a temporary session ends on exit and a named one
 * stays.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { splitWords } from './commands/enter.js';
import { sandbox } from './testing/sandbox.js';

/** Terminal output without cursor movement and colour codes. */
const plain = (text: string): string => text.replace(/\u001b\[[0-9;]*[A-Za-z]/g, '').replace(/\r/g, '');

describe('rjob enter', { timeout: 120_000 }, () => {
  it('runs verbs and shell lines in a temporary session that ends on exit', async () => {
    await using s = await sandbox();
    const file = join(s.dir, 'events.txt');
    const input = [
      "start --name events -- 'echo e1; echo e2'",
      'wait events',
      'get',
      `receive events > ${file}`,
      'echo from the session',
      'exit',
      '',
    ].join('\n');
    const out = await s.pty(['enter', 'localhost'], input);
    const screen = plain(out.stdout);
    expect(out.code).toBe(0);
    expect(screen).toContain('[localhost] rjob> ');
    expect(screen).toMatch(/1\s+events\s+BackgroundJob\s+Completed\s+True\s+localhost\s+echo e1; echo e2/);
    expect(screen).toContain('from the session\n');
    expect(await readFile(file, 'utf8')).toBe('e1\ne2\n');
    // The temporary session is gone from the agent with its job.
    const left = await s.rjob('session', 'list', '-c', 'localhost', '--json');
    expect(JSON.parse(left.stdout)).toEqual([]);
  });

  it('a redirect that cannot be written says why and keeps the records; >> appends', async () => {
    await using s = await sandbox();
    const file = join(s.dir, 'events.txt');
    const input = [
      "start --name events -- 'echo e1; echo e2'",
      'wait events',
      `receive events > ${join(s.dir, 'missing', 'events.txt')}`,
      `receive events > ${file}`,
      "start --name more -- 'echo e3'",
      'wait more',
      `receive more >> ${file}`,
      'exit',
      '',
    ].join('\n');
    const out = await s.pty(['enter', 'localhost'], input);
    expect(out.code).toBe(0);
    expect(plain(out.stdout)).toMatch(/ENOENT.*\(ERR_FILE_WRITE\)/);
    expect(await readFile(file, 'utf8')).toBe('e1\ne2\ne3\n');
  });

  it('keeps a named session and its jobs after exit', async () => {
    await using s = await sandbox();
    await s.rjob('session', 'new', 'localhost', '--name', 's1');
    const out = await s.pty(['enter', 's1'], "start --name kept -- 'echo kept'\nexit\n");
    expect(out.code).toBe(0);
    expect(plain(out.stdout)).toContain('[localhost] rjob> ');
    await s.rjob('wait', '-s', 's1', 'kept');
    expect((await s.rjob('receive', '-s', 's1', 'kept')).stdout).toBe('kept\n');
  });

  it('splits words as a shell would', () => {
    expect(splitWords(`start --name "a b" -- 'echo x; echo y'`)).toEqual([
      'start',
      '--name',
      'a b',
      '--',
      'echo x; echo y',
    ]);
    expect(splitWords("get ''")).toEqual(['get', '']);
  });
});
