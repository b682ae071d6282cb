/**
 * Many shells, one agent (S7), with the real `rjob` bin in parallel processes: every command ends
 * with a documented exit code and does its work once; parallel `session new` forget nothing; local
 * jobs and their output survive an agent restart after hours idle; a job gets the caller's
 * environment and directory, not the agent's.
 */
import { mkdtemp, readFile, realpath, rm } from 'node:fs/promises';
import { PassThrough } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JobStore } from '@rjob/agent';
import { afterEach, describe, expect, it } from 'vitest';
import { CliContext } from './context.js';
import { ExitCode } from './io.js';
import { alive } from './testing/daemon.js';
import { killAllBins, spawnBin } from './testing/processes.js';
import { type RunResult, type Sandbox, sandbox } from './testing/sandbox.js';

const HOUR_MS = 3_600_000;

interface JobRow {
  id: number;
  instanceId: string;
  beginTimeMs?: number;
  endTimeMs?: number;
  name: string;
  state: string;
  hasMoreData: boolean;
}

async function jobsOf(s: Sandbox, ...argv: string[]): Promise<JobRow[]> {
  const out = await s.rjob('get', '--json', ...argv);
  expect(out.code, out.stderr).toBe(0);
  return JSON.parse(out.stdout) as JobRow[];
}

/** Lines of a receive's stdout. */
const lines = (text: string): string[] => text.split('\n').filter(Boolean);

afterEach(async () => {
  await killAllBins();
});

describe('many commands at once on one agent', { timeout: 240_000 }, () => {
  it('S7 as written: 20 parallel starts, get j*, then receive --wait, get, stop, remove --force at once', async () => {
    await using s = await sandbox();
    const starts = await Promise.all(
      Array.from({ length: 20 }, (_, i) => s.bin(['start', '--name', `j${i + 1}`, '--', `echo ${i + 1}`])),
    );
    for (const [i, started] of starts.entries()) {
      expect(started.code, `start j${i + 1}: ${started.stderr}`).toBe(0);
      expect(started.stdout).toMatch(new RegExp(`\\s+j${i + 1}\\s+BackgroundJob\\s`));
    }
    const listed = await s.bin(['get', 'j*']);
    expect(listed.code, listed.stderr).toBe(0);
    const rows = lines(listed.stdout).slice(1);
    expect(rows).toHaveLength(20);
    const names = rows.map((row) => row.split(/\s+/)[1]);
    expect(new Set(names)).toEqual(new Set(Array.from({ length: 20 }, (_, i) => `j${i + 1}`)));
    const ids = rows.map((row) => row.split(/\s+/)[0]);
    expect(new Set(ids).size).toBe(20);

    const [received, got, stopped, removed] = await Promise.all([
      s.bin(['receive', '--wait', 'j7']),
      s.bin(['get']),
      s.bin(['stop', 'j3']),
      s.bin(['remove', '--force', 'j4']),
    ]);
    expect(received).toEqual({ code: 0, stdout: '7\n', stderr: '' });
    expect(got.code, got.stderr).toBe(0);
    // Every job is listed; j4 maybe not (the remove may have come first).
    expect(lines(got.stdout).length - 1).toBeGreaterThanOrEqual(19);
    expect(stopped.code, stopped.stderr).toBe(0);
    expect(stopped.stdout).toMatch(/\s+j3\s+/);
    expect(removed).toEqual({ code: 0, stdout: '', stderr: '' });
    const after = await jobsOf(s);
    expect(after.map((job) => job.name).sort()).toEqual(
      Array.from({ length: 20 }, (_, i) => `j${i + 1}`)
        .filter((name) => name !== 'j4')
        .sort(),
    );
    // The other jobs still hold their one line each, j7's was received once.
    expect((await s.rjob('receive', 'j7')).stdout).toBe('');
    expect((await s.rjob('receive', 'j1')).stdout).toBe('1\n');
  });

  it('50 mixed commands on 10 jobs: documented exit codes, every job once, every remove --force holds', async () => {
    await using s = await sandbox();
    const names = Array.from({ length: 10 }, (_, i) => `job${i + 1}`);
    // Each job prints 20 lines over about 2 s, so the verbs meet it running and finished.
    const command = (name: string): string => `for i in $(seq 1 20); do echo ${name}-$i; sleep 0.1; done`;
    type Verb = 'start' | 'get' | 'receive' | 'receive --wait' | 'stop' | 'remove --force' | 'wait';
    const plan: Array<{ verb: Verb; name: string }> = [];
    for (const name of names) plan.push({ verb: 'start', name });
    const others: Verb[] = ['get', 'receive', 'receive --wait', 'stop', 'wait', 'receive', 'get', 'wait'];
    for (let i = 0; plan.length < 47; i++) {
      plan.push({ verb: others[i % others.length]!, name: names[i % names.length]! });
    }
    // Three jobs are removed by force while the rest runs.
    for (const name of ['job2', 'job5', 'job9']) plan.push({ verb: 'remove --force', name });
    expect(plan).toHaveLength(50);
    const argv = ({ verb, name }: { verb: Verb; name: string }): string[] =>
      verb === 'start' ? ['start', '--name', name, '--', command(name)] : [...verb.split(' '), name];

    const results = await Promise.all(plan.map((step) => s.bin(argv(step))));

    // Documented exit codes only: 0, or 3 for a job not started yet or removed already.
    const allowed: Record<Verb, number[]> = {
      start: [ExitCode.Ok],
      get: [ExitCode.Ok, ExitCode.NotFound],
      receive: [ExitCode.Ok, ExitCode.NotFound],
      'receive --wait': [ExitCode.Ok, ExitCode.NotFound],
      stop: [ExitCode.Ok, ExitCode.NotFound],
      'remove --force': [ExitCode.Ok, ExitCode.NotFound],
      wait: [ExitCode.Ok, ExitCode.NotFound],
    };
    for (const [i, result] of results.entries()) {
      const step = plan[i]!;
      expect(allowed[step.verb], `${argv(step).join(' ')} exited ${result.code}: ${result.stderr}`).toContain(
        result.code,
      );
      if (result.code === ExitCode.NotFound) {
        // "no job NAME" before it was started or after its removal; a job removed between the
        // command's lookup and its request is named by the id the agent was asked about.
        expect(result.stderr).toMatch(/^rjob: [^\n]+ \(ERR_JOB_NOT_FOUND\)\n$/);
      } else {
        expect(result.stderr, argv(step).join(' ')).toBe('');
      }
    }

    // Every removal that succeeded holds; every other job is there once.
    const removed = new Set(
      plan
        .filter((step, i) => step.verb === 'remove --force' && results[i]!.code === 0)
        .map((step) => step.name),
    );
    const left = await jobsOf(s);
    expect(left.map((job) => job.name).sort()).toEqual(names.filter((name) => !removed.has(name)).sort());
    expect(new Set(left.map((job) => job.id)).size).toBe(left.length);
    for (const name of removed) {
      expect((await s.rjob('get', name)).code).toBe(ExitCode.NotFound);
    }

    // Every line reached at most one receive: the consuming receives and a last one share them out.
    await s.rjob('wait', 'job*');
    const finished = await jobsOf(s);
    expect(finished.every((job) => job.state === 'Completed' || job.state === 'Stopped')).toBe(true);
    // Nothing stopped or removed job1, job3 and job7: they ran to the end.
    for (const name of ['job1', 'job3', 'job7']) {
      expect(finished.find((job) => job.name === name)?.state).toBe('Completed');
    }
    for (const job of finished) {
      const outputs = plan
        .map((step, i) => ({ step, result: results[i]! }))
        .filter(({ step }) => step.name === job.name && step.verb.startsWith('receive'))
        .map(({ result }) => result.stdout);
      outputs.push((await s.rjob('receive', job.name)).stdout);
      const all = outputs.flatMap(lines);
      expect(new Set(all).size, `${job.name}: ${all.join(' ')}`).toBe(all.length);
      for (const line of all) expect(line).toMatch(new RegExp(`^${job.name}-\\d+$`));
      // A job that was not stopped printed all 20, each received once.
      if (job.state === 'Completed') expect(all).toHaveLength(20);
    }
  });

  it('10 parallel session new, unnamed and named, are all remembered under distinct names', async () => {
    await using s = await sandbox();
    const unnamed = await Promise.all(
      Array.from({ length: 10 }, () => s.bin(['session', 'new', 'localhost'])),
    );
    for (const created of unnamed) expect(created.code, created.stderr).toBe(0);
    const named = await Promise.all(
      Array.from({ length: 10 }, (_, i) => s.bin(['session', 'new', 'localhost', '--name', `s${i + 1}`])),
    );
    for (const created of named) expect(created.code, created.stderr).toBe(0);

    const listed = await s.bin(['session', 'list', '--json']);
    expect(listed.code, listed.stderr).toBe(0);
    const sessions = JSON.parse(listed.stdout) as Array<{ name: string; state: string }>;
    expect(sessions).toHaveLength(20);
    const listedNames = sessions.map((session) => session.name);
    expect(new Set(listedNames).size).toBe(20);
    for (let i = 1; i <= 10; i++) expect(listedNames).toContain(`s${i}`);
    // The names each command printed are the ones remembered, and every session is alive on the agent.
    const printed = unnamed.map((created) => lines(created.stdout)[1]!.split(/\s+/)[1]!);
    expect(new Set(printed).size).toBe(10);
    for (const name of printed) expect(listedNames).toContain(name);
    for (const session of sessions) expect(session.state).toBe('Opened');
  });

  it('two parallel session new with the same --name: one is remembered, the other refused', async () => {
    await using s = await sandbox();
    const both = await Promise.all([
      s.bin(['session', 'new', 'localhost', '--name', 'same']),
      s.bin(['session', 'new', 'localhost', '--name', 'same']),
    ]);
    const codes = both.map((created) => created.code).sort();
    expect(codes).toEqual([ExitCode.Ok, ExitCode.Usage]);
    const refused = both.find((created) => created.code !== 0)!;
    expect(refused.stderr).toMatch(/^rjob: a session named same exists already \(ERR_USAGE\)\n$/);
    const sessions = JSON.parse((await s.rjob('session', 'list', '--json')).stdout) as Array<{
      name: string;
      state: string;
    }>;
    expect(sessions.map((session) => session.name)).toEqual(['same']);
    expect(sessions[0]!.state).toBe('Opened');
  });
});

describe('an agent restart after hours idle', { timeout: 240_000 }, () => {
  it('keeps every local job and its unreceived output; a named session keeps its idle timeout', async () => {
    await using s = await sandbox();
    expect((await s.rjob('start', '--name', 'r1', '--', 'seq 1 1000')).code).toBe(0);
    expect((await s.rjob('start', '--name', 'r2', '--', 'echo two; echo err >&2')).code).toBe(0);
    expect((await s.rjob('start', '--name', 'r3', '--type', 'thread', '--eval', 'yield 3')).code).toBe(0);
    expect((await s.rjob('start', '--name', 'r4', '--', 'seq 1 10')).code).toBe(0);
    expect((await s.rjob('wait', 'r*')).code).toBe(0);
    // Half received before the restart: the rest must still be there after it.
    const r4 = await s.rjob('receive', 'r4');
    expect(r4.stdout).toBe('1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n');
    expect((await s.rjob('start', '--name', 'r5', '--', 'seq 11 20')).code).toBe(0);
    expect((await s.rjob('wait', 'r5')).code).toBe(0);

    // A named session configured to stay for a day, and one left at the default (2 h).
    expect((await s.rjob('session', 'new', 'localhost', '--name', 'long')).code).toBe(0);
    expect((await s.rjob('session', 'new', 'localhost', '--name', 'short')).code).toBe(0);
    expect((await s.rjob('start', '-s', 'long', '--name', 'k1', '--', 'echo kept')).code).toBe(0);
    expect((await s.rjob('wait', '-s', 'long', 'k1')).code).toBe(0);
    const ctx = new CliContext({
      stdout: new PassThrough(),
      stderr: new PassThrough(),
      env: s.env,
      cwd: s.dir,
    });
    try {
      const long = await ctx.namedSession('long');
      await long.request('session.configure', { idleTimeoutMs: 24 * HOUR_MS });
    } finally {
      await ctx.dispose();
    }

    const who = (rows: JobRow[]) =>
      rows.map((job) => [job.id, job.instanceId, job.beginTimeMs, job.endTimeMs]);
    const before = who(await jobsOf(s));
    const pid = Number(await readFile(join(s.dir, 'agent.pid'), 'utf8'));
    expect((await s.rjob('agent', 'stop')).code).toBe(0);
    expect(alive(pid)).toBe(false);

    // Three hours pass: every session was last seen then.
    const store = await JobStore.open({ dir: s.dir });
    const { sessions } = await store.load();
    const host = sessions.filter((session) => session.host);
    expect(host).toHaveLength(1);
    const stored = (name: string) => sessions.find((session) => session.name === name);
    expect(stored('long')?.idleTimeoutMs).toBe(24 * HOUR_MS);
    expect(stored('short')).toBeDefined();
    for (const session of sessions) {
      await store.saveSession({ ...session, lastSeenAt: new Date(Date.now() - 3 * HOUR_MS) });
    }
    await store.idle();

    // The next command starts the agent again.
    const rows = await jobsOf(s);
    expect(Number(await readFile(join(s.dir, 'agent.pid'), 'utf8'))).not.toBe(pid);
    // Each job comes back as it was: its id, instance id and times.
    expect(who(rows)).toEqual(before);
    expect(before.every(([, , begin, end]) => typeof begin === 'number' && typeof end === 'number')).toBe(
      true,
    );
    expect(rows.map((job) => [job.name, job.state, job.hasMoreData])).toEqual([
      ['r1', 'Completed', true],
      ['r2', 'Completed', true],
      ['r3', 'Completed', true],
      ['r4', 'Completed', false],
      ['r5', 'Completed', true],
    ]);
    const r1 = await s.rjob('receive', 'r1');
    expect(r1.code).toBe(0);
    expect(r1.stdout).toBe(Array.from({ length: 1000 }, (_, i) => `${i + 1}\n`).join(''));
    expect(await s.rjob('receive', 'r2')).toMatchObject({ code: 0, stdout: 'two\n' });
    expect((await s.rjob('receive', 'r2')).stdout).toBe('');
    expect((await s.rjob('receive', 'r3')).stdout).toBe('3\n');
    expect((await s.rjob('receive', 'r4')).stdout).toBe('');
    expect((await s.rjob('receive', 'r5')).stdout).toBe('11\n12\n13\n14\n15\n16\n17\n18\n19\n20\n');

    // The day-long session is there with its job and output; the default one expired.
    expect((await s.rjob('receive', '-s', 'long', 'k1')).stdout).toBe('kept\n');
    const short = await s.rjob('get', '-s', 'short');
    expect(short.code).toBe(ExitCode.NotFound);
    expect(short.stderr).toMatch(/ERR_SESSION_NOT_FOUND/);
    const { sessions: again } = await (await JobStore.open({ dir: s.dir })).load();
    expect(again.find((session) => session.name === 'long')?.idleTimeoutMs).toBe(24 * HOUR_MS);
  });
});

describe("a local job runs with the caller's environment and directory", { timeout: 120_000 }, () => {
  it("sees the calling shell's variables, not the agent's, in the caller's cwd", async () => {
    await using s = await sandbox();
    expect(process.env.SECRET_X).toBeUndefined();
    const where = await realpath(await mkdtemp(join(tmpdir(), 'rjob-cwd-')));
    try {
      // The agent starts from a shell that has SECRET_X.
      const agent = await s.bin(['agent', 'start'], { env: { SECRET_X: '1' } });
      expect(agent.code, agent.stderr).toBe(0);
      const pid = Number(await readFile(join(s.dir, 'agent.pid'), 'utf8'));
      expect((await readFile(`/proc/${pid}/environ`, 'utf8')).split('\0')).toContain('SECRET_X=1');

      // Another shell, with FOO and without SECRET_X, in another directory.
      const starter = spawnBin(
        ['start', '--name', 'env', '--', 'echo "FOO=$FOO"; printenv SECRET_X || echo no SECRET_X; pwd'],
        { env: { ...s.env, FOO: 'bar' }, cwd: where },
      );
      const { code } = await starter.exited;
      expect(code, starter.stderr()).toBe(0);
      // The same agent ran it.
      expect(Number(await readFile(join(s.dir, 'agent.pid'), 'utf8'))).toBe(pid);
      expect((await s.rjob('wait', 'env')).code).toBe(0);
      const received: RunResult = await s.rjob('receive', 'env');
      expect(received).toEqual({ code: 0, stdout: `FOO=bar\nno SECRET_X\n${where}\n`, stderr: '' });
    } finally {
      await rm(where, { recursive: true, force: true });
    }
  });
});
