import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RjobError } from '@rjob/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { receivedRecords, TestClient, unixConnector } from '../fixtures/agent-test-client.js';
import { AgentServer } from '../server/agent-server.js';
import { listenUnix, type UnixDoor } from './unix-door.js';

let dir: string;
const sockets: Socket[] = [];
const clients: TestClient[] = [];
let door: UnixDoor | undefined;
let server: AgentServer | undefined;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rjob-budget-'));
});

afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  for (const client of clients.splice(0)) client.dispose();
  await door?.close();
  await server?.close();
  door = undefined;
  server = undefined;
  await rm(dir, { recursive: true, force: true });
});

async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 20));
}

const MiB = 1024 * 1024;

describe('the shared frame budget of an agent', () => {
  it('closes connections whose half-sent frames would pass it; the others keep working', async () => {
    const budgetBytes = 8 * MiB;
    server = new AgentServer({ stateDir: dir, frameBudgetBytes: budgetBytes, handshakeTimeoutMs: 120_000 });
    const linkErrors: unknown[] = [];
    const socketPath = join(dir, 'run', 'agent.sock');
    door = await listenUnix(server, { socketPath, onLinkError: (error) => linkErrors.push(error) });

    // A well-behaved client, connected before the flood.
    const client = await TestClient.open(unixConnector(socketPath));
    clients.push(client);

    // Twelve connections each announce a 4 MiB frame (under the 16 MiB frame limit) and send
    // 3 MiB of it, then stall: 36 MiB in all against an 8 MiB budget.
    const hostile = 12;
    const partial = 3 * MiB;
    let closed = 0;
    for (let i = 0; i < hostile; i++) {
      const socket = createConnection(socketPath);
      sockets.push(socket);
      socket.on('error', () => {});
      socket.once('close', () => closed++);
      const header = Buffer.alloc(4);
      header.writeUInt32BE(4 * MiB, 0);
      socket.write(header);
      socket.write(Buffer.alloc(partial, 7));
    }
    // Settled when every connection still open has all its bytes held by the agent.
    await until(() => closed > 0 && server!.frameBudget.usedBytes === (hostile - closed) * partial);

    expect(server.frameBudget.peakBytes).toBeLessThanOrEqual(budgetBytes);
    expect(hostile - closed).toBeLessThanOrEqual(Math.floor(budgetBytes / partial));
    await until(() => linkErrors.length === closed);
    for (const error of linkErrors) expect(RjobError.hasCode(error, 'ERR_FRAME_BUDGET')).toBe(true);

    // Meanwhile the well-behaved client starts a job and receives its output, and a new client
    // can still connect.
    const job = await client.request('job.start', { definition: { command: 'echo still here' } });
    await client.request('job.wait', { selector: job.id });
    const records = receivedRecords(await client.request('job.receive', { selector: job.id }));
    expect(records.map((r) => r.data)).toEqual(['still here']);
    const late = await TestClient.open(unixConnector(socketPath));
    clients.push(late);
    expect(await late.request('session.info')).toMatchObject({ state: 'Opened' });

    // Hanging up gives the stalled connections' bytes back.
    for (const socket of sockets) socket.destroy();
    await until(() => server!.frameBudget.usedBytes === 0);
  });
});
