/**
 * rjob issue 17, the queue part: `start --after`, job groups with a parallel limit, and `send`,
 * through the CLI against the local agent (a daemon the CLI starts in the sandbox's private state
 * directory), including an agent restart, parallel clients and bad input.
 */
import { describe, expect, it } from 'vitest';
import { ExitCode } from './io.js';
import { type Sandbox, sandbox } from './testing/sandbox.js';

interface JobJson {
  id: number;
  name: string;
  state: string;
  group?: string;
  after?: number[];
  reason?: { code: string; message: string };
}

interface GroupJson {
  name: string;
  parallel: number | null;
  running: number;
  waiting: number;
}

async function jobs(s: Sandbox): Promise<Map<string, JobJson>> {
  const list = JSON.parse((await s.rjob('get', '--json')).stdout) as JobJson[];
  return new Map(list.map((job) => [job.name, job]));
}

async function states(s: Sandbox): Promise<Record<string, string>> {
  return Object.fromEntries([...(await jobs(s))].map(([name, job]) => [name, job.state]));
}

async function groups(s: Sandbox): Promise<GroupJson[]> {
  return JSON.parse((await s.rjob('group', 'list', '--json')).stdout) as GroupJson[];
}

/** A job that runs until the file `name` appears in the sandbox directory (no timing involved). */
const until = (name: string): string => `while [ ! -e ${name} ]; do sleep 0.05; done`;

describe('start --after', () => {
  it('waits until its dependencies Completed, then runs', async () => {
    await using s = await sandbox();
    await s.rjob('start', '-n', 'first', '--', until('go1'));
    await s.rjob('start', '-n', 'second', '--', until('go2'));
    const started = await s.rjob('start', '--after', 'first,2', '-n', 'then', '--', 'echo then');
    expect(started.code).toBe(0);
    expect(started.stdout).toMatch(/then\s+BackgroundJob\s+NotStarted\s/);
    expect((await jobs(s)).get('then')).toMatchObject({ state: 'NotStarted', after: [1, 2] });

    await s.bin(['start', '-n', 'touch1', 'touch', 'go1']);
    await s.rjob('wait', 'first');
    // One of two dependencies done: still waiting.
    expect((await states(s)).then).toBe('NotStarted');
    await s.rjob('start', '-n', 'touch2', 'touch', 'go2');
    await s.rjob('wait', 'then');
    expect((await states(s)).then).toBe('Completed');
    expect((await s.rjob('receive', 'then')).stdout).toBe('then\n');
  });

  it('fails with ERR_DEPENDENCY_FAILED naming the job that Failed or was Stopped', async () => {
    await using s = await sandbox();
    await s.rjob('start', '-n', 'bad', '--', `${until('go')}; exit 3`);
    await s.rjob('start', '-n', 'long', '--', until('never'));
    await s.rjob('start', '--after', 'bad', '-n', 'afterbad', '--', 'echo no');
    await s.rjob('start', '-a', 'long', '-n', 'afterlong', '--', 'echo no');
    // A chain: waits for a job that itself waits.
    await s.rjob('start', '-a', 'afterbad', '-n', 'chained', '--', 'echo no');
    await s.rjob('start', '-n', 'touch', 'touch', 'go');
    await s.rjob('wait', 'afterbad', 'chained');

    const after = await jobs(s);
    expect(after.get('afterbad')).toMatchObject({
      state: 'Failed',
      reason: { code: 'ERR_DEPENDENCY_FAILED' },
    });
    expect(after.get('afterbad')!.reason!.message).toMatch(/job 1 \(bad\) it waits for is Failed/);
    expect(after.get('chained')!.reason!.message).toMatch(/job 3 \(afterbad\) it waits for is Failed/);
    const received = await s.rjob('receive', 'afterbad');
    expect(received.code).toBe(1);
    expect(received.stdout).toBe('');
    expect(received.stderr).toMatch(/ERR_DEPENDENCY_FAILED/);

    // Removing a running dependency stops it first: the job waiting for it fails, naming Stopped.
    expect((await s.rjob('remove', '--force', 'long')).code).toBe(0);
    await s.rjob('wait', 'afterlong');
    const afterlong = (await jobs(s)).get('afterlong')!;
    expect(afterlong).toMatchObject({ state: 'Failed', reason: { code: 'ERR_DEPENDENCY_FAILED' } });
    expect(afterlong.reason!.message).toMatch(/job 2 \(long\) it waits for is Stopped/);
  });

  it('refuses an unknown job in --after and starts nothing', async () => {
    await using s = await sandbox();
    await s.rjob('start', '-n', 'one', 'true');
    const refused = await s.bin(['start', '--after', '1,nosuch', '-n', 'x', 'touch', 'ran']);
    expect(refused).toMatchObject({
      code: ExitCode.NotFound,
      stdout: '',
      stderr: expect.stringMatching(/^rjob: No job matches "nosuch"\. \(ERR_JOB_NOT_FOUND\)\n$/),
    });
    expect([...(await jobs(s)).keys()]).toEqual(['one']);
    expect((await s.rjob('start', '--after', ',', 'true')).code).toBe(ExitCode.Usage);
    // The job before is unaffected, and so is the next start.
    await s.rjob('wait', 'one');
    expect((await states(s)).one).toBe('Completed');
  });

  it('a waiting job is still waiting after an agent restart, and runs once its dependency Completed', async () => {
    await using s = await sandbox();
    await s.rjob('group', 'add', 'one', '--parallel', '1');
    // `blocker` runs in group one; `queued` waits for its slot; `dependent` waits for `queued`.
    await s.rjob('start', '-g', 'one', '-n', 'blocker', '--', until('never'));
    await s.rjob('start', '-g', 'one', '-n', 'queued', '--', until('go'));
    await s.rjob('start', '-g', 'one', '-n', 'third', '--', 'echo third');
    await s.rjob('start', '--after', 'queued', '-n', 'dependent', '--', 'echo dependent');
    expect(await states(s)).toEqual({
      blocker: 'Running',
      queued: 'NotStarted',
      third: 'NotStarted',
      dependent: 'NotStarted',
    });

    expect((await s.rjob('agent', 'stop')).stdout).toContain('agent stopped');
    // The running job ended with the agent; the waiting ones wait on: the group's slot went to
    // the first of them, the limit still holds for the next, and the dependent waits for it.
    const restored = await jobs(s);
    expect(restored.get('blocker')!.state).toMatch(/Stopped|Failed/);
    expect(restored.get('queued')).toMatchObject({ id: 2, state: 'Running', group: 'one' });
    expect(restored.get('third')).toMatchObject({ id: 3, state: 'NotStarted', group: 'one' });
    expect(restored.get('dependent')).toMatchObject({ id: 4, state: 'NotStarted', after: [2] });
    expect((await groups(s)).find((group) => group.name === 'one')).toEqual({
      name: 'one',
      parallel: 1,
      running: 1,
      waiting: 1,
    });

    await s.rjob('start', '-n', 'touch', 'touch', 'go');
    await s.rjob('wait', 'dependent', 'third');
    expect(await states(s)).toMatchObject({
      queued: 'Completed',
      third: 'Completed',
      dependent: 'Completed',
    });
    expect((await s.rjob('receive', 'dependent', 'third')).stdout).toBe('dependent\nthird\n');
  });
});

describe('groups', () => {
  it('adds, lists, changes and removes groups, with coded errors for bad input', async () => {
    await using s = await sandbox();
    const added = await s.rjob('group', 'add', 'build', '--parallel', '2');
    expect(added.code).toBe(0);
    expect(added.stdout).toMatch(/^Name\s+Parallel\s+Running\s+Waiting\nbuild\s+2\s+0\s+0\n$/);
    const list = await s.rjob('group', 'list');
    expect(list.stdout).toMatch(/default\s+unlimited\s+0\s+0\nbuild\s+2\s+0\s+0\n$/);
    expect((await s.rjob('group')).stdout).toBe(list.stdout);
    expect((await s.rjob('group', 'set', 'build', '-p', '3')).stdout).toMatch(/build\s+3\s/);

    expect(await s.rjob('group', 'add', 'build', '--parallel', '1')).toMatchObject({
      code: ExitCode.Usage,
      stderr: expect.stringMatching(/exists already.*\(ERR_INVALID_ARGUMENT\)\n$/),
    });
    expect(await s.rjob('group', 'set', 'nosuch', '--parallel', '1')).toMatchObject({
      code: ExitCode.NotFound,
      stderr: expect.stringMatching(/No group named nosuch.*\(ERR_GROUP_NOT_FOUND\)\n$/),
    });
    expect(await s.rjob('start', '--group', 'nosuch', 'true')).toMatchObject({
      code: ExitCode.NotFound,
      stderr: expect.stringMatching(/\(ERR_GROUP_NOT_FOUND\)\n$/),
    });
    expect((await s.rjob('group', 'add', 'x', '--parallel', '0')).code).toBe(ExitCode.Usage);
    expect((await s.rjob('group', 'add', 'x')).code).toBe(ExitCode.Usage);
    expect((await s.rjob('group', 'add', 'bad/name', '--parallel', '1')).stderr).toMatch(
      /ERR_INVALID_ARGUMENT/,
    );
    expect((await s.rjob('group', 'add', 'default', '--parallel', '1')).stderr).toMatch(
      /default group is unlimited.*ERR_INVALID_ARGUMENT/,
    );
    expect((await s.rjob('group', 'frobnicate')).code).toBe(ExitCode.Usage);

    // A group with a job in it is not removed.
    await s.rjob('start', '-g', 'build', '-n', 'b', '--', until('go'));
    expect(await s.rjob('group', 'remove', 'build')).toMatchObject({
      code: ExitCode.Refused,
      stderr: expect.stringMatching(/1 running and 0 waiting.*\(ERR_GROUP_IN_USE\)\n$/),
    });
    await s.rjob('start', '-n', 'touch', 'touch', 'go');
    await s.rjob('wait', 'b');
    expect((await s.rjob('group', 'remove', 'build')).code).toBe(0);
    expect((await groups(s)).map((group) => group.name)).toEqual(['default']);
    // Nothing else was touched along the way.
    expect(await states(s)).toEqual({ b: 'Completed', touch: 'Completed' });
  });

  it('runs at most --parallel jobs of a group, in order, even when started by parallel clients', async () => {
    await using s = await sandbox();
    await s.rjob('group', 'add', 'two', '--parallel', '2');
    // Eight clients at once, each a real bin; every job runs until its own file appears.
    const names = ['j1', 'j2', 'j3', 'j4', 'j5', 'j6', 'j7', 'j8'];
    const results = await Promise.all(
      names.map((name) => s.bin(['start', '--group', 'two', '-n', name, '--', until(`go-${name}`)])),
    );
    expect(results.map((result) => result.code)).toEqual(names.map(() => 0));
    // An ungrouped job is not held back by the group.
    await s.rjob('start', '-n', 'free', '--', 'echo free');
    await s.rjob('wait', 'free');

    const running = async (): Promise<string[]> =>
      [...(await jobs(s)).values()]
        .filter((job) => job.group === 'two' && job.state === 'Running')
        .map((job) => job.name);
    const order = [...(await jobs(s)).values()].filter((job) => job.group === 'two').map((job) => job.name);
    expect(order).toHaveLength(8);
    const first = await running();
    expect(first).toEqual(order.slice(0, 2));
    expect((await groups(s)).find((group) => group.name === 'two')).toMatchObject({ running: 2, waiting: 6 });

    // Each finished job lets the next waiting one in, in the order they were started.
    for (let i = 0; i < 6; i++) {
      const done = order[i]!;
      await s.rjob('start', '-n', `t${i}`, 'touch', `go-${done}`);
      await s.rjob('wait', done);
      const now = await running();
      expect(now).toEqual(order.slice(i + 1, i + 3));
    }
    // A higher limit lets waiting jobs go at once; a lower one lets none more in.
    await s.rjob('group', 'set', 'two', '--parallel', '1');
    for (const name of order.slice(6)) await s.rjob('start', 'touch', `go-${name}`);
    await s.rjob('wait', ...order);
    expect((await groups(s)).find((group) => group.name === 'two')).toMatchObject({ running: 0, waiting: 0 });
  });

  it('keeps groups and their limits across an agent restart', async () => {
    await using s = await sandbox();
    await s.rjob('group', 'add', 'g', '--parallel', '1');
    await s.rjob('group', 'add', 'h', '--parallel', '4');
    await s.rjob('agent', 'stop');
    expect(await groups(s)).toEqual([
      { name: 'default', parallel: null, running: 0, waiting: 0 },
      { name: 'g', parallel: 1, running: 0, waiting: 0 },
      { name: 'h', parallel: 4, running: 0, waiting: 0 },
    ]);
    await s.rjob('start', '-g', 'g', '-n', 'a', '--', until('go'));
    await s.rjob('start', '-g', 'g', '-n', 'b', 'true');
    expect(await states(s)).toEqual({ a: 'Running', b: 'NotStarted' });
    await s.rjob('start', '-n', 'touch', 'touch', 'go');
    await s.rjob('wait', 'b');
    expect((await states(s)).b).toBe('Completed');
  });

  it('a paused job still holds its slot; restart runs a job again in its group', async () => {
    await using s = await sandbox();
    await s.rjob('group', 'add', 'g', '--parallel', '1');
    await s.rjob('start', '-g', 'g', '-n', 'a', '--', until('go'));
    await s.rjob('start', '-g', 'g', '-n', 'b', 'echo b');
    expect((await s.rjob('pause', 'a')).stdout).toMatch(/a\s+BackgroundJob\s+Suspended\s/);
    expect(await states(s)).toEqual({ a: 'Suspended', b: 'NotStarted' });
    expect((await s.rjob('resume', 'a')).code).toBe(0);
    await s.rjob('start', '-n', 'touch', 'touch', 'go');
    await s.rjob('wait', 'a', 'b');
    expect(await states(s)).toMatchObject({ a: 'Completed', b: 'Completed' });

    // The restarted `a` runs in g again: it holds the slot, so the restarted `b` waits for it.
    await s.rjob('start', '-n', 'untouch', 'rm', 'go');
    await s.rjob('wait', 'untouch');
    const again = JSON.parse((await s.rjob('restart', 'a', 'b', '--json')).stdout) as JobJson[];
    expect(again.map((job) => [job.name, job.group])).toEqual([
      ['a', 'g'],
      ['b', 'g'],
    ]);
    const [newA, newB] = again;
    const byId = async (id: number) =>
      (JSON.parse((await s.rjob('get', String(id), '--json')).stdout) as JobJson[])[0]!;
    expect((await byId(newB!.id)).state).toBe('NotStarted');
    await s.rjob('start', '-n', 'touch2', 'touch', 'go');
    await s.rjob('wait', String(newA!.id), String(newB!.id));
    expect((await byId(newB!.id)).state).toBe('Completed');
  });

  it('stops a waiting job without starting it; the next one takes the slot', async () => {
    await using s = await sandbox();
    await s.rjob('group', 'add', 'g', '--parallel', '1');
    await s.rjob('start', '-g', 'g', '-n', 'a', '--', until('go'));
    await s.rjob('start', '-g', 'g', '-n', 'b', 'touch', 'b-ran');
    await s.rjob('start', '-g', 'g', '-n', 'c', 'echo c');
    expect((await s.rjob('stop', 'b')).code).toBe(0);
    expect((await states(s)).b).toBe('Stopped');
    await s.rjob('start', '-n', 'touch', 'touch', 'go');
    await s.rjob('wait', 'c');
    expect(await states(s)).toMatchObject({ a: 'Completed', b: 'Stopped', c: 'Completed' });
    // b never ran: its file does not exist.
    expect((await s.rjob('start', '-n', 'check', '--', 'test -e b-ran || echo absent')).code).toBe(0);
    await s.rjob('wait', 'check');
    expect((await s.rjob('receive', 'check')).stdout).toBe('absent\n');
    // Still stopped after a restart: a user's stop is final.
    await s.rjob('agent', 'stop');
    expect((await states(s)).b).toBe('Stopped');
  });
});

describe('send', () => {
  it('writes TEXT and piped stdin to a job started with --stdin-open, and --eof ends its input', async () => {
    await using s = await sandbox();
    await s.rjob('start', '--stdin-open', '-n', 'cat', 'cat');
    expect(await s.rjob('send', 'cat', 'hello', 'world')).toEqual({ code: 0, stdout: '', stderr: '' });
    expect((await s.rjob('send', 'cat', '-n', 'no newline;')).code).toBe(0);
    const piped = await s.bin(['send', '1', '--stdin'], { input: ' piped\nline 2\n' });
    expect(piped).toMatchObject({ code: 0, stderr: '' });
    expect((await s.rjob('get', 'cat', '--json')).stdout).toMatch(/"state":"Running"/);
    expect((await s.rjob('send', 'cat', '--eof')).code).toBe(0);
    await s.rjob('wait', 'cat');
    expect((await s.rjob('receive', 'cat')).stdout).toBe('hello world\nno newline; piped\nline 2\n');
    expect((await states(s)).cat).toBe('Completed');
  });

  it('pipes a large input through until end of file, with --eof', async () => {
    await using s = await sandbox();
    await s.rjob('start', '--stdin-open', '-n', 'wc', 'wc -c');
    const input = 'x'.repeat(1_000_000);
    expect((await s.bin(['send', 'wc', '--stdin', '--eof'], { input })).code).toBe(0);
    await s.rjob('wait', 'wc');
    expect((await s.rjob('receive', 'wc')).stdout.trim()).toBe('1000000');
  });

  it('refuses jobs without open stdin, finished, waiting and unknown jobs with coded errors', async () => {
    await using s = await sandbox();
    // Without --stdin-open a job reads end of file at once, as before: cat ends by itself.
    await s.rjob('start', '-n', 'plain', 'cat');
    await s.rjob('wait', 'plain');
    expect((await states(s)).plain).toBe('Completed');
    await s.rjob('start', '-n', 'running', '--', until('go'));
    expect(await s.rjob('send', 'running', 'hi')).toMatchObject({
      code: ExitCode.Refused,
      stderr: expect.stringMatching(/takes no input.*\(ERR_STDIN_CLOSED\)\n$/),
    });
    expect(await s.rjob('send', 'plain', 'hi')).toMatchObject({
      code: ExitCode.Refused,
      stderr: expect.stringMatching(
        /is Completed; only a running job takes input.*\(ERR_JOB_NOT_RUNNING\)\n$/,
      ),
    });
    await s.rjob('start', '--after', 'running', '-n', 'waiting', '--stdin-open', 'true');
    expect((await s.rjob('send', 'waiting', 'hi')).stderr).toMatch(/is NotStarted.*ERR_JOB_NOT_RUNNING/);
    expect(await s.rjob('send', 'nosuch', 'hi')).toMatchObject({
      code: ExitCode.NotFound,
      stderr: expect.stringMatching(/\(ERR_JOB_NOT_FOUND\)\n$/),
    });
    // A closed stdin takes nothing more.
    await s.rjob('start', '--stdin-open', '-n', 'closed', '--', `cat; ${until('go')}`);
    expect((await s.rjob('send', 'closed', '--eof')).code).toBe(0);
    expect((await s.rjob('send', 'closed', 'late')).stderr).toMatch(/ERR_STDIN_CLOSED/);
    expect((await s.rjob('send', 'running')).code).toBe(ExitCode.Usage);
    expect((await s.rjob('start', '--stdin-open', '--eval', '1')).code).toBe(ExitCode.Usage);
    // The other jobs are unaffected.
    await s.rjob('start', '-n', 'touch', 'touch', 'go');
    await s.rjob('wait', 'running', 'closed', 'waiting');
    expect(await states(s)).toMatchObject({
      running: 'Completed',
      closed: 'Completed',
      waiting: 'Completed',
    });
  });
});

describe('help and completion', () => {
  it('know group, send and the new start options', async () => {
    await using s = await sandbox();
    const start = (await s.rjob('start', '--help')).stdout;
    expect(start).toMatch(/--after ID\[,ID\.\.\.\][\s\S]*--group NAME[\s\S]*--stdin-open/);
    expect((await s.rjob('group', '--help')).stdout).toMatch(
      /Usage: rjob group[\s\S]*add NAME --parallel N[\s\S]*Examples:/,
    );
    expect((await s.rjob('send', '--help')).stdout).toMatch(/Usage: rjob send[\s\S]*--stdin[\s\S]*--eof/);
    expect((await s.rjob('--help')).stdout).toMatch(/group .*\n\s+send /);
    const bash = (await s.rjob('completion', 'bash')).stdout;
    expect(bash).toMatch(/compgen -W "start .*group send /);
    expect(bash).toMatch(/start\) COMPREPLY=.*--after --group --stdin-open/);
    expect(bash).toMatch(/group\) COMPREPLY=\(\$\(compgen -W "list add set remove --parallel/);
    expect(bash).toMatch(/send\) COMPREPLY=\(\$\(compgen -W "--stdin --eof/);
    const zsh = (await s.rjob('completion', 'zsh')).stdout;
    expect(zsh).toMatch(/start\) _arguments .*'--after\[.*'--group\[.*'--stdin-open'/);
    expect(zsh).toMatch(/group\) _arguments '1:group command:\(list add set remove\)'/);
    expect(zsh).toMatch(/send\) _arguments '--stdin' '--eof'/);
  });
});
