/**
 * Lose nothing in everyday use: damaged state files lose only the damaged item (reported in the
 * agent's log and `rjob agent status`), and a full disk pauses a job's output instead of hanging
 * or losing it. Real agent daemon, real CLI; the agent is restarted after the files are damaged.
 */
import { open, readdir, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type Sandbox, sandbox } from './testing/sandbox.js';
import { mountTmpfs } from './testing/tmpfs.js';

const numbers = (from: number, to: number): string[] =>
  Array.from({ length: to - from + 1 }, (_, i) => String(from + i));

/** The directories of the jobs the agent keeps (`sessions/<id>/jobs/<instance>`). */
async function jobDirs(stateDir: string): Promise<string[]> {
  const out: string[] = [];
  for (const session of await readdir(join(stateDir, 'sessions'))) {
    const jobs = join(stateDir, 'sessions', session, 'jobs');
    for (const job of await readdir(jobs).catch(() => [])) out.push(join(jobs, job));
  }
  return out;
}

/** The job directory whose job.bin names `command`. */
async function jobDirOf(stateDir: string, command: string): Promise<string> {
  for (const dir of await jobDirs(stateDir)) {
    if ((await readFile(join(dir, 'job.bin'))).includes(command)) return dir;
  }
  throw new Error(`no job file names ${command}`);
}

async function segmentOf(jobDir: string): Promise<string> {
  const names = (await readdir(join(jobDir, 'spool'))).filter((name) => name.endsWith('.seg'));
  expect(names).toHaveLength(1);
  return join(jobDir, 'spool', names[0]!);
}

/** Byte offset of record `seq` in a segment (walking the entries' length fields). */
async function entryOffset(path: string, seq: number): Promise<number> {
  const bytes = await readFile(path);
  let at = 0;
  while (bytes.readUInt32LE(at + 8) !== seq) at += 16 + bytes.readUInt32LE(at);
  return at;
}

async function flip(path: string, offset: number): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    const one = Buffer.alloc(1);
    await handle.read(one, 0, 1, offset);
    one[0] = one[0]! ^ 0x5a;
    await handle.write(one, 0, 1, offset);
  } finally {
    await handle.close();
  }
}

/** Starts a job and waits for it to finish. */
async function finished(sb: Sandbox, name: string, command: string): Promise<void> {
  expect((await sb.rjob('start', '--name', name, '--', command)).code).toBe(0);
  expect((await sb.rjob('wait', name)).code).toBe(0);
}

/** The damage below is done to a stopped agent's files: the stop must have happened. */
async function stopAgent(sb: Sandbox): Promise<void> {
  const stopped = await sb.rjob('agent', 'stop');
  expect(stopped).toMatchObject({ code: 0, stdout: 'agent stopped\n' });
}

async function restartAgent(sb: Sandbox): Promise<void> {
  await stopAgent(sb);
  expect((await sb.rjob('agent', 'start')).code).toBe(0);
}

async function status(sb: Sandbox): Promise<string> {
  const result = await sb.rjob('agent', 'status');
  expect(result.code).toBe(0);
  return result.stdout;
}

describe('damaged state files (agent restarted after the damage)', () => {
  it('a damaged spool record in the middle of 1000 loses that record alone, reported', async () => {
    await using sb = await sandbox();
    await finished(sb, 'big', 'seq 1 1000');
    await stopAgent(sb);
    const segment = await segmentOf(await jobDirOf(sb.dir, 'seq 1 1000'));
    const at = await entryOffset(segment, 500);
    await flip(segment, at + 2);
    await flip(segment, at + 18);
    await sb.rjob('agent', 'start');

    const received = await sb.rjob('receive', 'big');
    expect(received.code).toBe(0);
    expect(received.stdout.split('\n').filter(Boolean)).toEqual(numbers(1, 1000).filter((n) => n !== '500'));
    expect(received.stderr).toMatch(/WARNING: 1 record\(s\) \(seq 500–500\) were lost: .*ERR_STATE_DAMAGED/);
    expect(await status(sb)).toMatch(
      new RegExp(`damaged: spool segment ${segment}: .*record\\(s\\) 500–500 lost.*\\(ERR_STATE_DAMAGED\\)`),
    );
  });

  it('a truncated segment tail loses only the cut record, reported', async () => {
    await using sb = await sandbox();
    await finished(sb, 'big', 'seq 1 1000');
    await stopAgent(sb);
    const segment = await segmentOf(await jobDirOf(sb.dir, 'seq 1 1000'));
    await truncate(segment, (await stat(segment)).size - 3);
    await sb.rjob('agent', 'start');

    const received = await sb.rjob('receive', 'big');
    expect(received.stdout.split('\n').filter(Boolean)).toEqual(numbers(1, 999));
    expect(await status(sb)).toMatch(
      new RegExp(`damaged: spool segment ${segment}: .*cut off.*\\(ERR_STATE_DAMAGED\\)`),
    );
  });

  it('a damaged job file loses that job only, reported', async () => {
    await using sb = await sandbox();
    await finished(sb, 'lost', 'echo one');
    await finished(sb, 'kept', 'echo two');
    await stopAgent(sb);
    const jobFile = join(await jobDirOf(sb.dir, 'echo one'), 'job.bin');
    const size = (await stat(jobFile)).size;
    await flip(jobFile, Math.floor(size / 2));
    await flip(jobFile, Math.floor(size / 2) + 1);
    await sb.rjob('agent', 'start');

    const listed = await sb.rjob('get');
    expect(listed.stdout).toContain('kept');
    expect(listed.stdout).not.toContain('lost');
    expect((await sb.rjob('receive', 'kept')).stdout).toBe('two\n');
    expect(await status(sb)).toContain(`damaged: job file ${jobFile}: `);
    expect(await status(sb)).toMatch(/dropped \(left in place\), everything else kept \(ERR_STATE_DAMAGED\)/);
  });

  it.each([
    ['an empty', async (path: string) => writeFile(path, '')],
    [
      'a garbled',
      async (path: string) => {
        const size = (await stat(path)).size;
        for (const at of [9, Math.floor(size / 2), size - 1]) await flip(path, at);
      },
    ],
  ])('%s session.bin does not hide the session or its jobs', async (_, damage) => {
    await using sb = await sandbox();
    await finished(sb, 'a', 'echo alpha');
    await finished(sb, 'b', 'seq 1 3');
    await restartAgent(sb);
    const sessionDir = join(await jobDirOf(sb.dir, 'echo alpha'), '..', '..');
    const sessionFile = join(sessionDir, 'session.bin');
    await stopAgent(sb);
    await damage(sessionFile);
    await sb.rjob('agent', 'start');

    const listed = await sb.rjob('get');
    expect(listed.code).toBe(0);
    expect(listed.stdout).toMatch(/\ba\b.*Completed/);
    expect(listed.stdout).toMatch(/\bb\b.*Completed/);
    expect((await sb.rjob('receive', 'a')).stdout).toBe('alpha\n');
    expect((await sb.rjob('receive', 'b')).stdout).toBe('1\n2\n3\n');
    expect(await status(sb)).toMatch(
      /damaged: session file .*session\.bin: .*restored from session\.key with all its jobs/,
    );
  });
});

describe('a full disk', () => {
  it('pauses a job’s output and loses no line once space is freed', async () => {
    await using tmpfs = await mountTmpfs(8 * 1024 * 1024);
    await using sb = await sandbox({ RJOB_STATE_DIR: join(tmpfs.dir, 'state') });
    expect((await sb.rjob('get')).code).toBe(0);
    // Room for the job's entry and spool directory, not for its output.
    await tmpfs.fill(32 * 1024);
    const started = await sb.rjob('start', '--name', 'big', '--', 'seq 1 50000');
    expect(started.code).toBe(0);
    // Noticed, not hung silently: the agent says the output is paused.
    while (!(await status(sb)).includes('disk-full: ')) await new Promise((r) => setTimeout(r, 50));
    expect(await status(sb)).toMatch(/disk-full: spool .*paused.*\(ERR_DISK_FULL\)/);

    await tmpfs.free();
    expect((await sb.rjob('wait', 'big')).code).toBe(0);
    const received = await sb.rjob('receive', 'big');
    expect(received.code).toBe(0);
    expect(received.stdout.split('\n').filter(Boolean)).toEqual(numbers(1, 50000));
    expect(received.stderr).toMatch(
      /WARNING: rjob: the disk holding the agent's state is full .*\(ERR_DISK_FULL\)/,
    );
    expect((await sb.rjob('get', 'big')).stdout).toMatch(/Completed\s+False/);
    expect(await status(sb)).toMatch(/disk-space-back: spool .*nothing was lost/);
  });

  it('`rjob start` on a full disk fails with ERR_DISK_FULL (exit 7), and works once space is freed', async () => {
    await using tmpfs = await mountTmpfs(2 * 1024 * 1024);
    await using sb = await sandbox({ RJOB_STATE_DIR: join(tmpfs.dir, 'state') });
    expect((await sb.rjob('get')).code).toBe(0);
    await tmpfs.fill();
    const refused = await sb.rjob('start', '--name', 'x', '--', 'echo hi');
    expect(refused.code).toBe(7);
    expect(refused.stderr).toMatch(/^rjob: .*disk is full.*\(ERR_DISK_FULL\)\n$/);
    expect((await sb.rjob('get')).stdout).not.toContain('echo hi');

    await tmpfs.free();
    await finished(sb, 'x', 'echo hi');
    expect((await sb.rjob('receive', 'x')).stdout).toBe('hi\n');
  });
});
