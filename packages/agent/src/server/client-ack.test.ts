// Records are consumed only once the receiver has them (client acks), through core's session client
// against a real AgentServer on a Unix socket: a subscription cancelled after 10 records consumed
// exactly 10, and so did a `receiveStream` loop that breaks after 10.
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  channelFromDuplex,
  defineTransport,
  openSession,
  type RemoteRecord,
  type Session,
  type TransportChannel,
} from '@rjob/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { listenUnix, type UnixDoor } from '../doors/unix-door.js';
import { AgentServer } from './agent-server.js';

const unixTransport = defineTransport<string>({
  name: 'unix',
  connect: (socketPath, { maxFrameBytes }) =>
    new Promise<TransportChannel>((resolve, reject) => {
      const socket = createConnection(socketPath);
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(channelFromDuplex(socket, { maxFrameBytes }));
      });
    }),
});

/** Enough records that several batches are in flight when the receiver stops. */
const N = 20_000;

let dir: string;
let server: AgentServer;
let door: UnixDoor;
let session: Session<string>;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rjob-ack-'));
  server = new AgentServer({ stateDir: dir, defaultCwd: dir, computerName: 'server01' });
  door = await listenUnix(server, { socketPath: join(dir, 'run', 'agent.sock') });
  session = await openSession(unixTransport, door.socketPath, { name: 'acks', computerName: 'server01' });
});

afterEach(async () => {
  await session?.close().catch(() => {});
  await door.close();
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

/** A finished job that printed 1..N. */
async function finishedSeq(name: string): Promise<number> {
  const job = await session.jobs.start({ definition: { command: `seq 1 ${N}` } }, { name });
  await session.jobs.wait(job.id);
  return job.id;
}

const range = (from: number, to: number): string[] =>
  Array.from({ length: to - from + 1 }, (_, i) => String(from + i));

/** Everything the job still holds, consumed. */
async function rest(id: number): Promise<string[]> {
  return (await session.jobs.receive(id)).map((record) => String(record.data));
}

/**
 * Subscribes, takes 10 records (acknowledging them with `ack: 'manual'`; with `auto` returning
 * from onRecord is the acknowledgement), then cancels while more are on their way.
 */
async function takeTenThenCancel(
  id: number,
  options: { follow: boolean; ack: 'manual' | 'auto' },
): Promise<{ taken: string[]; delivered: number }> {
  const taken: string[] = [];
  let delivered = 0;
  await new Promise<void>((resolve, reject) => {
    const subscription = session.subscribe(
      id,
      {
        onRecord(record: RemoteRecord) {
          delivered++;
          if (taken.length >= 10) return;
          taken.push(String(record.data));
          if (options.ack === 'manual') subscription.ack(record);
          if (taken.length === 10) subscription.cancel().then(resolve, reject);
        },
        onEnd() {
          reject(new Error('the stream ended before 10 records were taken'));
        },
        onSessionEnd: reject,
      },
      { follow: options.follow, ack: options.ack },
    );
    subscription.jobs.catch(reject);
  });
  return { taken, delivered };
}

describe('a receiver that stops early consumes only what it took', () => {
  for (const follow of [false, true]) {
    for (const ack of ['manual', 'auto'] as const) {
      it(`subscribe (follow: ${follow}, ack: ${ack}) cancelled after 10 records: the next receive gets 11..N`, async () => {
        const id = await finishedSeq(`sub-${follow}-${ack}`);
        const { taken } = await takeTenThenCancel(id, { follow, ack });
        expect(taken).toEqual(range(1, 10));
        expect(await rest(id)).toEqual(range(11, N));
        expect(await rest(id)).toEqual([]);
      });
    }
  }

  it('manual acks: records delivered but never acknowledged are all there again', async () => {
    const id = await finishedSeq('unacked');
    const taken: string[] = [];
    await new Promise<void>((resolve, reject) => {
      const subscription = session.subscribe(
        id,
        {
          onRecord(record) {
            taken.push(String(record.data));
            // Acknowledges nothing; stops after 100.
            if (taken.length === 100) subscription.cancel().then(resolve, reject);
          },
          onEnd: () => reject(new Error('ended early')),
          onSessionEnd: reject,
        },
        { follow: false, ack: 'manual' },
      );
    });
    expect(taken.slice(0, 100)).toEqual(range(1, 100));
    expect(await rest(id)).toEqual(range(1, N));
  });

  for (const wait of [false, true]) {
    it(`receiveStream (wait: ${wait}) with a break after 10: the next receive gets 11..N`, async () => {
      const id = await finishedSeq(`stream-${wait}`);
      const taken: string[] = [];
      for await (const record of session.jobs.receiveStream(id, { wait })) {
        taken.push(String(record.data));
        if (taken.length === 10) break;
      }
      expect(taken).toEqual(range(1, 10));
      expect(await rest(id)).toEqual(range(11, N));
    });
  }

  it('receiveStream that throws after 10 consumed exactly 10', async () => {
    const id = await finishedSeq('throws');
    const taken: string[] = [];
    await expect(
      (async () => {
        for await (const record of session.jobs.receiveStream(id)) {
          taken.push(String(record.data));
          if (taken.length === 10) throw new Error('the caller gave up');
        }
      })(),
    ).rejects.toThrow('the caller gave up');
    expect(taken).toEqual(range(1, 10));
    expect(await rest(id)).toEqual(range(11, N));
  });

  it('receiveStream read to the end consumes everything, once', async () => {
    const id = await finishedSeq('whole');
    const taken: string[] = [];
    for await (const record of session.jobs.receiveStream(id)) taken.push(String(record.data));
    expect(taken).toEqual(range(1, N));
    expect(await rest(id)).toEqual([]);
  });
});
