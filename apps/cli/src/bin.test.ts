/**
 * The real `rjob` bin (bin/rjob.cjs from source, as on a fresh clone) in child processes, against
 * the agent daemon it starts in a private state directory: S1, S5 and the exit codes.
 */
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ExitCode } from './io.js';
import { alive } from './testing/daemon.js';
import { sandbox } from './testing/sandbox.js';

describe('the rjob bin', { timeout: 120_000 }, () => {
  it('S1: jobs started by one invocation are found, received and removed by later ones', async () => {
    await using s = await sandbox();
    const started = await s.bin(['start', '--name', 'build', '--', 'sleep 1; echo built']);
    expect(started.stderr).toBe('');
    expect(started.stdout).toMatch(
      /1\s+build\s+BackgroundJob\s+\w+\s+True\s+localhost\s+sleep 1; echo built/,
    );
    expect((await s.bin(['wait', 'build'])).code).toBe(0);
    expect(await s.bin(['receive', 'build'])).toEqual({ code: 0, stdout: 'built\n', stderr: '' });
    expect((await s.bin(['get', 'build'])).stdout).toMatch(/Completed\s+False/);
    expect((await s.bin(['remove', 'build'])).code).toBe(0);

    // The daemon the first command started is the sandbox's own, and `agent stop` ends it.
    const pid = Number(await readFile(join(s.dir, 'agent.pid'), 'utf8'));
    expect(alive(pid)).toBe(true);
    expect((await s.bin(['agent', 'stop'])).stdout).toBe('agent stopped\n');
    expect(alive(pid)).toBe(false);
    const status = await s.bin(['agent', 'status']);
    expect(status.code).toBe(ExitCode.NotFound);
  });

  it('invoke on localhost runs in the local agent and prefixes lines; --as-job outlives the CLI', async () => {
    await using s = await sandbox();
    const out = await s.bin(['invoke', '-c', 'localhost', '--', 'echo hello from rjob']);
    expect(out).toEqual({ code: 0, stdout: '[localhost] hello from rjob\n', stderr: '' });

    const job = await s.bin([
      'invoke',
      '-c',
      'localhost',
      '--as-job',
      '--name',
      'fan',
      '--',
      'sleep 1; echo later',
    ]);
    expect(job.stdout).toMatch(/fan\s+RemoteJob\s+\w+\s+True\s+localhost\s+sleep 1; echo later/);
    // The CLI that started it has exited; the job finishes in the agent.
    await s.bin(['wait', 'fan']);
    const children = await s.bin(['get', 'fan', '--children']);
    expect(children.stdout).toMatch(/localhost\s+RemoteJob\s+Completed\s+True\s+localhost\s+/);
    expect((await s.bin(['receive', 'fan'])).stdout).toBe('[localhost] later\n');
  });

  it('S5: invoke -s --as-job is a local RemoteJob that shows Disconnected with its session; every line arrives once', async () => {
    await using s = await sandbox();
    expect((await s.bin(['session', 'new', 'localhost', '--name', 'bg'])).code).toBe(0);
    const loop = 'for i in $(seq 20); do sleep 0.1; echo "Output $i"; done';
    const started = await s.bin(['invoke', '-s', 'bg', '--as-job', '--name', 'loop', '--', loop]);
    expect(started).toMatchObject({ code: 0, stderr: '' });
    // A job of the local agent, not of the session: listed without -s.
    expect(started.stdout).toMatch(/^\s*\d+\s+loop\s+RemoteJob\s+(Running|NotStarted)\s+\w+\s+localhost\s/m);
    expect((await s.bin(['session', 'disconnect', 'bg'])).stdout).toMatch(
      /bg\s+unix\s+localhost\s+\S+\s+Disconnected/,
    );
    // The job shows Disconnected; the command goes on in the session meanwhile.
    expect((await s.bin(['get', 'loop'])).stdout).toMatch(/loop\s+RemoteJob\s+Disconnected\s/);
    await new Promise((resolve) => setTimeout(resolve, 800));
    expect((await s.bin(['get', 'loop'])).stdout).toMatch(/loop\s+RemoteJob\s+Disconnected\s/);
    expect((await s.bin(['session', 'connect', 'bg'])).stdout).toMatch(
      /bg\s+unix\s+localhost\s+\S+\s+Opened/,
    );
    expect((await s.bin(['get', 'loop'])).stdout).toMatch(/loop\s+RemoteJob\s+(Running|Completed)\s/);
    // Nothing of the session's is left to hand over: the local job already streams it.
    expect(await s.bin(['session', 'receive', 'bg', '--out-target', 'job'])).toEqual({
      code: 0,
      stdout: '',
      stderr: '',
    });
    const received = await s.bin(['receive', 'loop', '--wait']);
    expect(received.stderr).toBe('');
    expect(received.stdout).toBe(
      Array.from({ length: 20 }, (_, i) => `[localhost] Output ${i + 1}\n`).join(''),
    );
    expect((await s.bin(['get', 'loop'])).stdout).toMatch(/loop\s+RemoteJob\s+Completed\s+False\s/);
    expect((await s.bin(['session', 'remove', 'bg'])).code).toBe(0);
  });

  it('session receive --out-target job hands a job kept in the session to a local RemoteJob; each line once', async () => {
    await using s = await sandbox();
    expect((await s.bin(['session', 'new', 'localhost', '--name', 'bg'])).code).toBe(0);
    const loop = 'for i in $(seq 20); do sleep 0.05; echo "Output $i"; done';
    expect((await s.bin(['start', '-s', 'bg', '--name', 'loop', '--', loop])).code).toBe(0);
    expect((await s.bin(['session', 'disconnect', 'bg'])).code).toBe(0);

    const handed = await s.bin(['session', 'receive', 'bg', '--out-target', 'job']);
    expect(handed.stderr).toBe('');
    expect(handed.code).toBe(0);
    const row = handed.stdout.match(/^\s*(\d+)\s+loop\s+RemoteJob\s+\w+\s+\w+\s+(\S+)\s+(.+?)\s*$/m);
    expect(row, handed.stdout).not.toBeNull();
    const [, id, location, command] = row!;
    expect(command).toBe(loop);

    // The local job's lines carry the session's computer, as a fan-out child's do; each arrives once.
    const received = await s.bin(['receive', id!, '--wait']);
    expect(received.stderr).toBe('');
    expect(received.stdout).toBe(
      Array.from({ length: 20 }, (_, i) => `[${location}] Output ${i + 1}\n`).join(''),
    );
    // The local job consumed the remote records: nothing is left to receive a second time.
    expect(await s.bin(['receive', '-s', 'bg', 'loop'])).toEqual({ code: 0, stdout: '', stderr: '' });
    expect((await s.bin(['session', 'remove', 'bg'])).code).toBe(0);
  });

  it('prints one line and a documented exit code for each kind of error', async () => {
    await using s = await sandbox();
    const cases: Array<[string[], number, RegExp]> = [
      [['receive', 'nope'], ExitCode.NotFound, /ERR_JOB_NOT_FOUND/],
      [['get', '-s', 'nosuch'], ExitCode.NotFound, /ERR_UNKNOWN_SESSION/],
      [['get', '--frob'], ExitCode.Usage, /ERR_USAGE/],
      [['invoke', '-c', '127.0.0.1:1', '--', 'true'], ExitCode.Unreachable, /ERR_SSH_CONNECT_REFUSED/],
    ];
    for (const [argv, code, pattern] of cases) {
      const out = await s.bin(argv);
      expect(out.code, argv.join(' ')).toBe(code);
      expect(out.stderr).toMatch(/^rjob: [^\n]+ \(ERR_[A-Z_]+\)\n$/);
      expect(out.stderr).toMatch(pattern);
    }
    await s.bin(['start', '--name', 'slow', '--', 'sleep 30']);
    const timedOut = await s.bin(['wait', 'slow', '--timeout', '100ms']);
    expect(timedOut.code).toBe(ExitCode.Timeout);
    expect(timedOut.stderr).toMatch(/^rjob: timed out [^\n]+ \(ERR_TIMEOUT\)\n$/);
  });

  it('has help for every verb and completion scripts', async () => {
    await using s = await sandbox();
    for (const verb of ['start', 'get', 'receive', 'wait', 'stop', 'remove', 'invoke', 'session', 'agent']) {
      const out = await s.rjob(verb, '--help');
      expect(out.code, verb).toBe(0);
      expect(out.stdout, verb).toMatch(/Usage: rjob/);
      expect(out.stdout, verb).toMatch(/Examples?:/);
    }
    expect((await s.rjob('completion', 'bash')).stdout).toContain('complete -o default -F _rjob rjob');
    expect((await s.rjob('completion', 'zsh')).stdout).toContain('#compdef rjob');
  });

  it('help and both completions know the fan-out flags', async () => {
    await using s = await sandbox();
    const help = (await s.rjob('invoke', '--help')).stdout;
    const bash = (await s.rjob('completion', 'bash')).stdout;
    const zsh = (await s.rjob('completion', 'zsh')).stdout;
    for (const flag of ['--limit', '--out-dir', '--timeout', '--connect-timeout']) {
      expect(help, flag).toContain(`${flag} `);
      expect(
        bash.split('\n').find((line) => line.includes('invoke)')),
        flag,
      ).toContain(`${flag} `);
      expect(
        zsh.split('\n').find((line) => line.includes('invoke)')),
        flag,
      ).toContain(`'${flag}[`);
    }
    expect(help).toContain('@FILE:PATTERN');
  });
});

describe("the bin's code cache", { timeout: 120_000 }, () => {
  it('is kept per verb, survives damage and parallel first runs, and is never needed', async () => {
    await using s = await sandbox();
    const cache = join(s.dir, 'xdg-cache');
    const env = { XDG_CACHE_HOME: cache };
    expect((await s.bin(['start', '--name', 'c', '--', 'echo cached'])).code).toBe(0);
    expect((await s.bin(['wait', 'c'])).code).toBe(0);
    const listing = async () => (await readdir(join(cache, 'rjob')).catch(() => [] as string[])).sort();

    // Five first runs at once: each works, one cache file per verb stays, no temporary file.
    const first = await Promise.all(Array.from({ length: 5 }, () => s.bin(['get', 'c'], { env })));
    for (const run of first) expect(run).toMatchObject({ code: 0, stderr: '' });
    const files = await listing();
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/^cli-[0-9a-f]{8}-[0-9a-f]{8}-get\.v8$/);
    const file = join(cache, 'rjob', files[0]!);
    const written = await readFile(file);
    expect(written.byteLength).toBeGreaterThan(10_000);

    // Read, not rewritten, by the next run of the verb; another verb gets its own.
    expect((await s.bin(['get', 'c'], { env })).stdout).toBe(first[0]!.stdout);
    expect(await readFile(file)).toEqual(written);
    expect((await s.bin(['receive', '--keep', 'c'], { env })).stdout).toBe('cached\n');
    expect(await listing()).toEqual([files[0], files[0]!.replace('-get.', '-receive.')].sort());

    // A damaged cache is rejected by V8 and written again; the command is unaffected.
    await writeFile(file, Buffer.alloc(written.byteLength, 7));
    expect((await s.bin(['get', 'c'], { env })).stdout).toBe(first[0]!.stdout);
    expect((await readFile(file)).equals(Buffer.alloc(written.byteLength, 7))).toBe(false);

    // An older build of this install loses its caches when this one writes its own; another
    // install's (another path) are left alone.
    const install = files[0]!.slice(0, 'cli-'.length + 8);
    await writeFile(join(cache, 'rjob', `${install}-00000000-get.v8`), 'old');
    await writeFile(join(cache, 'rjob', 'cli-00000000-00000000-get.v8'), 'other install');
    await rm(file);
    expect((await s.bin(['get', 'c'], { env })).code).toBe(0);
    expect(await listing()).toEqual(
      [files[0], files[0]!.replace('-get.', '-receive.'), 'cli-00000000-00000000-get.v8'].sort(),
    );

    // No place to keep it (the cache home is a file): the command works all the same.
    const notDir = join(s.dir, 'not-a-dir');
    await writeFile(notDir, '');
    const without = await s.bin(['get', 'c'], { env: { XDG_CACHE_HOME: notDir } });
    expect(without).toEqual({ code: 0, stdout: first[0]!.stdout, stderr: '' });
  });
});
