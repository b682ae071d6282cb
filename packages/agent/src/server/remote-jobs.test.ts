// Plugins of the agent (AgentServerOptions.jobTypes and transports): a plugin job type runs in a
// session, and with a transport the agent runs RemoteJobs itself, one per target, in its own
// process: values arrive as values, a target that cannot be reached fails its child with its code,
// and a stop ends the remote work and closes the job's session on the remote agent.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineJobType, openSession, type Session, unixSocketTransport } from '@rjob/core';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { listenUnix, type UnixDoor } from '../doors/unix-door.js';
import { AgentServer } from './agent-server.js';
import type { AgentTransport } from './remote-jobs.js';

let dir: string;
let local: AgentServer;
let remote: AgentServer;
let localDoor: UnixDoor;
let remoteDoor: UnixDoor;
let client: Session<string>;
const resolved: string[] = [];

/** Targets that are absolute paths are Unix sockets of other agents. */
const unixPlugin: AgentTransport = {
  name: 'unix',
  accepts: (target) => target.startsWith('/'),
  async resolve(target, settings) {
    resolved.push(`${target} ${settings.env.MARK ?? ''}`);
    return { transport: unixSocketTransport, target };
  },
};

const echoType = defineJobType<{ text: string }>({
  name: 'EchoJob',
  aliases: ['echo'],
  describe: (definition) => `echo ${definition.text}`,
  start(definition, context) {
    context.running();
    context.emit('output', definition.text);
    context.finish({ state: 'Completed' });
    return { stop() {} };
  },
});

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rjob-plugins-'));
  remote = new AgentServer({ stateDir: join(dir, 'remote'), persist: false, computerName: 'far' });
  remoteDoor = await listenUnix(remote, { socketPath: join(dir, 'remote.sock') });
  local = new AgentServer({
    stateDir: join(dir, 'local'),
    persist: false,
    jobTypes: [echoType],
    transports: [unixPlugin],
  });
  localDoor = await listenUnix(local, { socketPath: join(dir, 'local.sock') });
  client = await openSession(unixSocketTransport, localDoor.socketPath, { host: true, autoReconnect: false });
});

afterEach(async () => {
  await client.close().catch(() => {});
  await localDoor.close();
  await local.close();
  await remoteDoor.close();
  await remote.close();
  await rm(dir, { recursive: true, force: true });
});

it('runs a plugin job type by name and alias', async () => {
  const job = await client.jobs.start({ type: 'echo', definition: { text: 'hi' } });
  expect(job.type).toBe('EchoJob');
  await client.jobs.wait(job.id);
  expect((await client.jobs.receive(job.id)).map((record) => record.data)).toEqual(['hi']);
});

it('runs RemoteJob children in the agent: values as values, an unreachable target coded', async () => {
  const work = { type: 'thread', definition: { eval: 'yield { a: 1, when: new Date(0) }' } };
  const parent = await client.jobs.startGroup({
    type: 'RemoteJob',
    name: 'fan',
    children: [
      {
        type: 'RemoteJob',
        name: 'far',
        location: 'far',
        definition: { target: remoteDoor.socketPath, computerName: 'far', work, env: { MARK: 'm1' } },
      },
      {
        type: 'remote',
        name: 'gone',
        location: 'gone',
        definition: { target: join(dir, 'nothing.sock'), computerName: 'gone', work },
      },
      { type: 'RemoteJob', name: 'odd', definition: { target: 'ssh-host', work } },
    ],
  });
  const [done] = await client.jobs.wait(parent.id);
  expect(done!.state).toBe('Failed');
  const children = await client.jobs.get({ ids: parent.childIds, includeChildren: true });
  expect(children.map((job) => [job.name, job.type, job.state, job.reason?.code])).toEqual([
    ['far', 'RemoteJob', 'Completed', undefined],
    ['gone', 'RemoteJob', 'Failed', expect.stringMatching(/^ERR_/)],
    ['odd', 'RemoteJob', 'Failed', 'ERR_INVALID_ARGUMENT'],
  ]);
  expect(children[1]!.reason?.message).toMatch(/^gone: /);
  expect(children[2]!.reason?.message).toBe('ssh-host: no transport of this agent reaches ssh-host.');
  expect(resolved).toContain(`${remoteDoor.socketPath} m1`);
  const records = await client.jobs.receive(children[0]!.id);
  expect(records.map((record) => record.data)).toEqual([{ a: 1, when: new Date(0) }]);
  expect((records[0]!.data as { when: unknown }).when).toBeInstanceOf(Date);
  // The job's session on the far agent was closed before the child reported its end.
  expect(remote.sessions()).toEqual([]);
});

it('a stop ends the remote work and closes the session', async () => {
  const job = await client.jobs.start({
    type: 'RemoteJob',
    definition: {
      target: remoteDoor.socketPath,
      work: { type: 'process', definition: { command: 'echo begun; sleep 600' } },
    },
  });
  // Running on the far agent once its first line arrived.
  for (let i = 0; i < 400; i++) {
    if ((await client.jobs.receive(job.id, { keep: true })).length > 0) break;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  expect(remote.sessions().map((session) => session.runningJobs)).toEqual([1]);
  const [stopped] = await client.jobs.stop(job.id);
  expect(stopped!.state).toBe('Stopped');
  expect(remote.sessions()).toEqual([]);
});
