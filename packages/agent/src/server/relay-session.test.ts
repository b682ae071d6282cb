// Sessions the agent holds (hosted.*) and relays to them (open with `relay`): a relay's requests
// reach the held session, several relays at once share it, and a client that leaves without
// acknowledging what it was sent loses nothing — also when the whole stream, job.end included, had
// already reached the relay.
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSession, ProtocolErrorCode, type Session, unixSocketTransport } from '@rjob/core';
import type { RelayRequest } from '@rjob/core/protocol';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { listenUnix, type UnixDoor } from '../doors/unix-door.js';
import { AgentServer } from './agent-server.js';
import type { AgentTransport } from './remote-jobs.js';

let dir: string;
let local: AgentServer;
let remote: AgentServer;
let localDoor: UnixDoor;
let remoteDoor: UnixDoor;
let host: Session<string>;

const unixPlugin: AgentTransport = {
  name: 'unix',
  accepts: (target) => target.startsWith('/'),
  resolve: async (target) => ({ transport: unixSocketTransport, target }),
};

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rjob-relay-'));
  // The far agent spools its records, as a daemon does.
  await mkdir(join(dir, 'remote'), { mode: 0o700 });
  remote = new AgentServer({ stateDir: join(dir, 'remote'), computerName: 'far' });
  remoteDoor = await listenUnix(remote, { socketPath: join(dir, 'remote.sock') });
  local = new AgentServer({ stateDir: join(dir, 'local'), persist: false, transports: [unixPlugin] });
  localDoor = await listenUnix(local, { socketPath: join(dir, 'local.sock') });
  host = await openSession(unixSocketTransport, localDoor.socketPath, { host: true, autoReconnect: false });
});

afterEach(async () => {
  await host.close().catch(() => {});
  await localDoor.close();
  await local.close();
  await remoteDoor.close();
  await remote.close();
  await rm(dir, { recursive: true, force: true });
});

async function held(name: string): Promise<RelayRequest> {
  const opened = await host.request('hosted.open', { target: remoteDoor.socketPath, name });
  expect(opened.info.computerName).toBe('far');
  return {
    target: remoteDoor.socketPath,
    sessionId: opened.sessionId,
    resumeSecret: opened.resumeSecret,
    name,
  };
}

const relay = (request: RelayRequest): Promise<Session<string>> =>
  openSession(unixSocketTransport, localDoor.socketPath, { relay: request, autoReconnect: false });

it('relays from several clients at once reach the one held session', async () => {
  const request = await held('s1');
  const clients = await Promise.all([relay(request), relay(request), relay(request)]);
  const started = await Promise.all(
    clients.map((client, i) => client.jobs.start({ name: `j${i}`, definition: { command: `echo ${i}` } })),
  );
  for (const [i, client] of clients.entries()) {
    await client.jobs.wait(started[i]!.id);
    expect((await client.jobs.receive(started[i]!.id)).map((r) => r.data)).toEqual([String(i)]);
  }
  // One session on the far agent: the relays did not open sessions of their own there.
  expect((await clients[0]!.request('session.list')).map((s) => s.name)).toEqual(['s1']);
  await Promise.all(clients.map((client) => client.close({ wait: false })));
  expect((await host.request('hosted.list')).map((h) => [h.name, h.state])).toEqual([['s1', 'Opened']]);
});

it('a client that leaves without acknowledging its records, the whole stream sent, loses none', async () => {
  const request = await held('s2');
  const first = await relay(request);
  const job = await first.jobs.start({ definition: { command: 'seq 1 1000' } });
  await first.jobs.wait(job.id);
  // A subscription whose records nobody takes: this client object has no handler for it, so it
  // acknowledges nothing (as a receiver killed before writing them).
  await first.request('job.subscribe', {
    selector: job.id,
    subscriptionId: 'unacked',
    clientAck: true,
    follow: false,
  });
  // Long enough for all 1000 records and job.end to reach the relay and this client.
  await new Promise((resolve) => setTimeout(resolve, 300));
  await first.close({ wait: false });

  const second = await relay(request);
  let records: unknown[] = [];
  for (let i = 0; i < 100 && records.length === 0; i++) {
    records = (await second.jobs.receive(job.id)).map((r) => r.data);
    if (records.length === 0) await new Promise((resolve) => setTimeout(resolve, 20));
  }
  expect(records).toEqual(Array.from({ length: 1000 }, (_, i) => String(i + 1)));
  await second.close({ wait: false });
});

it('refuses a relay with credentials the held session does not have, coded', async () => {
  const request = await held('s3');
  await expect(relay({ ...request, resumeSecret: 'wrong' })).rejects.toMatchObject({
    code: ProtocolErrorCode.SessionNotFound,
  });
  // The held session is untouched.
  const client = await relay(request);
  expect((await client.request('session.info')).name).toBe('s3');
  await client.close({ wait: false });
});
