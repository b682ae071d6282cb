/**
 * Plugins from the config file, through the real `rjob` bin and the agent daemon it starts: a job
 * type of a test module used with `start --type`, the example command transport
 * (examples/command-transport, `cmd://NAME` targets) used with plain `invoke` and `--as-job`, an
 * unknown type refused with the registered ones, missing and broken modules left out with coded
 * errors while everything else works, and several CLI processes using the plugins at once.
 */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ExitCode } from './io.js';
import { BIN, type Sandbox, sandbox } from './testing/sandbox.js';

const REPEAT_PLUGIN = fileURLToPath(new URL('./testing/plugins/repeat-job-type.mjs', import.meta.url));
// The built example when there is one (the bundled bin runs plain JavaScript), else its source
// (a bin run from source has tsx).
const BUILT_EXAMPLE = fileURLToPath(
  new URL('../../../examples/command-transport/dist/plugin.js', import.meta.url),
);
const COMMAND_PLUGIN = existsSync(BUILT_EXAMPLE)
  ? BUILT_EXAMPLE
  : fileURLToPath(new URL('../../../examples/command-transport/src/plugin.ts', import.meta.url));

/** A sandbox whose config file names `plugins`; `cmd://NAME` reaches the sandbox's own agent. */
async function pluginSandbox(plugins: string[]): Promise<Sandbox> {
  const s = await sandbox({
    // What the command transport runs for cmd://NAME: this sandbox's `rjob agent --stdio`.
    RJOB_CMD_TEMPLATE: `${process.execPath} ${BIN} agent --stdio`,
  });
  s.env.RJOB_CONFIG = join(s.dir, 'config.json');
  await writeFile(s.env.RJOB_CONFIG, JSON.stringify({ plugins }));
  return s;
}

describe('plugins from the config file', { timeout: 120_000 }, () => {
  it('a job type of a plugin module: start --type NAME --definition JSON, get, wait, receive', async () => {
    await using s = await pluginSandbox([REPEAT_PLUGIN]);
    const started = await s.bin([
      'start',
      '--type',
      'repeat',
      '--name',
      'rep',
      '--definition',
      '{"text":"hi","times":3}',
    ]);
    expect(started.stderr).toBe('');
    expect(started.stdout).toMatch(/1\s+rep\s+RepeatJob\s+\w+\s+True\s+localhost\s+repeat hi x3/);
    expect((await s.bin(['wait', 'rep'])).code).toBe(ExitCode.Ok);
    expect((await s.bin(['get', 'rep'])).stdout).toMatch(/RepeatJob\s+Completed\s+True/);
    expect(await s.bin(['receive', 'rep'])).toEqual({ code: 0, stdout: 'hi 1\nhi 2\nhi 3\n', stderr: '' });
    // By its type name too, and the type's own refusal of a bad definition keeps its code.
    const byName = await s.bin(['start', '-t', 'RepeatJob', '-d', '{"text":"a","times":1}', '--json']);
    expect(JSON.parse(byName.stdout)).toMatchObject({ type: 'RepeatJob' });
    await s.bin(['start', '--type', 'repeat', '--name', 'bad', '--definition', '{"text":1}']);
    expect(JSON.parse((await s.bin(['get', 'bad', '--json'])).stdout)).toMatchObject([
      { type: 'RepeatJob', state: 'Failed', reason: { code: 'ERR_INVALID_ARGUMENT' } },
    ]);

    const plugins = await s.bin(['agent', 'plugins']);
    expect(plugins.code).toBe(ExitCode.Ok);
    expect(plugins.stdout).toContain(`config file: ${s.env.RJOB_CONFIG}`);
    expect(plugins.stdout).toMatch(/job types: .*RepeatJob \(repeat\)/);
    expect((await s.bin(['agent', 'plugins', '--types'])).stdout.split('\n')).toContain('repeat');
  });

  it('a plugin type without --definition, and an unknown type, are refused with codes', async () => {
    await using s = await pluginSandbox([REPEAT_PLUGIN]);
    const missing = await s.bin(['start', '--type', 'repeat']);
    expect(missing).toMatchObject({ code: ExitCode.Usage });
    expect(missing.stderr).toBe(
      'rjob: --type repeat takes its job definition as --definition JSON (ERR_USAGE)\n',
    );
    const unknown = await s.bin(['start', '--type', 'repaet', '--definition', '{}']);
    expect(unknown.code).toBe(ExitCode.Usage);
    expect(unknown.stderr).toBe(
      'rjob: no job type named repaet; the agent has ThreadJob (thread), BackgroundJob (process), RepeatJob (repeat), RemoteJob (remote) (ERR_UNKNOWN_JOB_TYPE)\n',
    );
    // Also without --definition: the name is what is wrong.
    expect((await s.bin(['start', '--type', 'repaet', '--', 'true'])).stderr).toMatch(
      /no job type named repaet; .*\(ERR_UNKNOWN_JOB_TYPE\)/,
    );
    const json = await s.bin(['start', '--type', 'repeat', '--definition', '{oops']);
    expect(json.code).toBe(ExitCode.Usage);
    expect(json.stderr).toMatch(/^rjob: --definition is JSON: .*\(ERR_USAGE\)\n$/);
    expect((await s.bin(['get'])).stdout).toBe('');
  });

  it('the example command transport: invoke -c cmd://NAME, plain and --as-job', async () => {
    await using s = await pluginSandbox([COMMAND_PLUGIN]);
    // Plain invoke: this CLI process loads the plugin and runs `rjob agent --stdio` as the link.
    const plain = await s.bin(['invoke', '-c', 'cmd://box1', '--', 'echo plain $((40 + 2))']);
    expect(plain).toEqual({ code: 0, stdout: '[cmd://box1] plain 42\n', stderr: '' });
    // Two targets at once.
    const two = await s.bin(['invoke', '-c', 'cmd://box1,cmd://box2', '--', 'echo two']);
    expect(two.stdout.split('\n').sort()).toEqual(['', '[cmd://box1] two', '[cmd://box2] two']);

    // --as-job: the agent's RemoteJob reaches the target through the plugin it loaded.
    const job = await s.bin([
      'invoke',
      '-c',
      'cmd://box1',
      '--as-job',
      '--name',
      'viacmd',
      '--',
      'echo as job',
    ]);
    expect(job.stderr).toBe('');
    expect(job.stdout).toMatch(/viacmd\s+RemoteJob/);
    expect((await s.bin(['wait', 'viacmd'])).code).toBe(ExitCode.Ok);
    expect(await s.bin(['receive', 'viacmd'])).toEqual({
      code: 0,
      stdout: '[cmd://box1] as job\n',
      stderr: '',
    });

    const plugins = await s.bin(['agent', 'plugins', '--json']);
    expect(JSON.parse(plugins.stdout)).toMatchObject({
      transports: [{ name: 'unix' }, { name: 'command', scheme: 'cmd://' }, { name: 'ws' }, { name: 'ssh' }],
      pluginErrors: [],
    });

    // A target the command cannot reach fails with the transport's code.
    s.env.RJOB_CMD_TEMPLATE = '/bin/false {name}';
    const failed = await s.bin(['invoke', '-c', 'cmd://gone', '--', 'echo never']);
    expect(failed.code).not.toBe(ExitCode.Ok);
    expect(failed.stderr).toMatch(/gone.*ERR_COMMAND_EXITED/);
  });

  it('a missing or broken module is left out with a coded error; the rest and every other job work', async () => {
    await using s = await pluginSandbox([]);
    const throws = join(s.dir, 'throws.mjs');
    const empty = join(s.dir, 'empty.mjs');
    const clash = join(s.dir, 'clash.mjs');
    await writeFile(throws, "throw new Error('plugin exploded');\n");
    await writeFile(empty, 'export const nothing = 1;\n');
    await writeFile(
      clash,
      "export default { jobTypes: [{ name: 'MyProcess', aliases: ['process'], describe: () => '', start() {} }] };\n",
    );
    await writeFile(
      s.env.RJOB_CONFIG!,
      JSON.stringify({
        plugins: ['./missing.mjs', './throws.mjs', REPEAT_PLUGIN, './empty.mjs', './clash.mjs'],
      }),
    );
    const plugins = await s.bin(['agent', 'plugins']);
    expect(plugins.code).toBe(ExitCode.JobFailed);
    expect(plugins.stdout).toMatch(/job types: .*RepeatJob \(repeat\)/);
    expect(plugins.stderr.split('\n')).toEqual([
      `rjob: plugin ./missing.mjs: no such file ${join(s.dir, 'missing.mjs')} (ERR_PLUGIN_LOAD)`,
      'rjob: plugin ./throws.mjs: cannot be loaded: plugin exploded (ERR_PLUGIN_LOAD)',
      'rjob: plugin ./empty.mjs: exports no plugin (a default export or `rjobPlugin`) (ERR_PLUGIN_LOAD)',
      'rjob: plugin ./clash.mjs: the job type name process is already taken (ERR_PLUGIN_LOAD)',
      '',
    ]);
    // The daemon said so in its log, and started anyway.
    const log = await readFile(join(s.dir, 'agent.log'), 'utf8');
    expect(log).toMatch(
      /rjob-agent: plugin \.\/throws\.mjs: cannot be loaded: plugin exploded \(ERR_PLUGIN_LOAD\)/,
    );
    // A type the broken modules meant is unknown, and the error says why.
    const unknown = await s.bin(['start', '--type', 'MyProcess', '--definition', '{}']);
    expect(unknown.stderr).toMatch(
      /no job type named MyProcess; .*plugin \.\/clash\.mjs: .*\(ERR_UNKNOWN_JOB_TYPE\)/,
    );
    // Everything else works: the good plugin's type and the built-in ones.
    await s.bin(['start', '--name', 'rep', '--type', 'repeat', '--definition', '{"text":"ok","times":1}']);
    await s.bin(['start', '--name', 'sh', '--', 'echo still here']);
    expect((await s.bin(['wait', 'rep', 'sh'])).code).toBe(ExitCode.Ok);
    expect((await s.bin(['receive', 'rep'])).stdout).toBe('ok 1\n');
    expect((await s.bin(['receive', 'sh'])).stdout).toBe('still here\n');
  });

  it('a config file that is not JSON: ERR_PLUGIN_CONFIG, and local jobs still run', async () => {
    await using s = await pluginSandbox([]);
    await writeFile(s.env.RJOB_CONFIG!, '{ "plugins": [ ');
    const plugins = await s.bin(['agent', 'plugins']);
    expect(plugins.code).toBe(ExitCode.JobFailed);
    expect(plugins.stderr).toMatch(/^rjob: the config file .* is not JSON: .*\(ERR_PLUGIN_CONFIG\)\n$/);
    // A target no transport takes falls to SSH; the CLI says first why no plugin took it.
    const invoked = await s.bin(['invoke', '-c', 'cmd://x', '--connect-timeout', '2s', '--', 'true']);
    expect(invoked.stderr).toMatch(/^rjob: the config file .*\(ERR_PLUGIN_CONFIG\)\n/);
    expect((await s.bin(['start', '--name', 'j', '--', 'echo fine'])).code).toBe(ExitCode.Ok);
    expect((await s.bin(['wait', 'j'])).code).toBe(ExitCode.Ok);
    expect((await s.bin(['receive', 'j'])).stdout).toBe('fine\n');
  });

  it('several CLI processes use the plugins at once', async () => {
    await using s = await pluginSandbox([REPEAT_PLUGIN, COMMAND_PLUGIN]);
    const starts = Array.from({ length: 4 }, (_, i) =>
      s.bin(['start', '--name', `r${i}`, '--type', 'repeat', '--definition', `{"text":"r${i}","times":2}`]),
    );
    const invokes = Array.from({ length: 3 }, (_, i) =>
      s.bin(['invoke', '-c', `cmd://p${i}`, '--', `echo p${i}`]),
    );
    const asJobs = Array.from({ length: 3 }, (_, i) =>
      s.bin(['invoke', '-c', `cmd://q${i}`, '--as-job', '--name', `q${i}`, '--', `echo q${i}`]),
    );
    const results = await Promise.all([...starts, ...invokes, ...asJobs]);
    for (const result of results) expect(result).toMatchObject({ code: 0, stderr: '' });
    expect(results.slice(4, 7).map((r) => r.stdout)).toEqual([
      '[cmd://p0] p0\n',
      '[cmd://p1] p1\n',
      '[cmd://p2] p2\n',
    ]);
    const names = ['r0', 'r1', 'r2', 'r3', 'q0', 'q1', 'q2'];
    expect((await s.bin(['wait', ...names])).code).toBe(ExitCode.Ok);
    const received = await Promise.all(names.map((name) => s.bin(['receive', name])));
    expect(received.map((r) => r.stdout)).toEqual([
      'r0 1\nr0 2\n',
      'r1 1\nr1 2\n',
      'r2 1\nr2 2\n',
      'r3 1\nr3 2\n',
      '[cmd://q0] q0\n',
      '[cmd://q1] q1\n',
      '[cmd://q2] q2\n',
    ]);
  });
});
