import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { RjobError } from '../errors.js';
import { encodeFrame } from '../protocol/framing.js';
import { runTransportConformance } from '../testing/transport-conformance.js';
import { channelFromDuplex, defineTransport, type TransportChannel } from './transport.js';

async function socketPair(maxFrameBytes: number): Promise<{
  client: TransportChannel;
  server: TransportChannel;
  rawClient: net.Socket;
  rawServer: net.Socket;
  dispose: () => Promise<void>;
}> {
  const dir = mkdtempSync(join(tmpdir(), 'rjob-transport-'));
  const path = join(dir, 's.sock');
  const server = net.createServer();
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  await new Promise<void>((resolve) => server.listen(path, resolve));
  const rawClient = net.connect(path);
  await new Promise<void>((resolve) => rawClient.once('connect', () => resolve()));
  const rawServer = await accepted;
  return {
    client: channelFromDuplex(rawClient, { maxFrameBytes }),
    server: channelFromDuplex(rawServer, { maxFrameBytes }),
    rawClient,
    rawServer,
    dispose: async () => {
      rawClient.destroy();
      rawServer.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

runTransportConformance(({ maxFrameBytes }) => socketPair(maxFrameBytes), {
  test: { describe, it },
  name: 'unix socket conformance',
});

// Child stdio shape: a readable and a writable instead of one duplex.
runTransportConformance(
  ({ maxFrameBytes }) => {
    const up = new PassThrough();
    const down = new PassThrough();
    return {
      client: channelFromDuplex({ readable: down, writable: up }, { maxFrameBytes }),
      server: channelFromDuplex({ readable: up, writable: down }, { maxFrameBytes }),
    };
  },
  { name: 'stream pair conformance', test: { describe, it } },
);

function closeReason(channel: TransportChannel): Promise<RjobError> {
  return new Promise((resolve) => channel.onClose(resolve));
}

describe('channelFromDuplex', () => {
  it('closes with ERR_FRAME_TOO_LARGE on an oversized header, before the body arrives', async () => {
    const pair = await socketPair(1024);
    const reason = closeReason(pair.server);
    const peerGone = new Promise<void>((resolve) => pair.rawClient.once('close', () => resolve()));
    pair.rawClient.write(new Uint8Array([0, 0, 4, 1]));
    expect((await reason).code).toBe('ERR_FRAME_TOO_LARGE');
    await peerGone;
    await pair.dispose();
  });

  it('closes with ERR_FRAME_TRUNCATED when the stream ends inside a frame', async () => {
    const pair = await socketPair(1024);
    const reason = closeReason(pair.server);
    pair.rawClient.end(encodeFrame(new Uint8Array(10)).subarray(0, 6));
    expect((await reason).code).toBe('ERR_FRAME_TRUNCATED');
    await pair.dispose();
  });

  it('reports a peer that vanishes as ERR_LINK_CLOSED', async () => {
    const pair = await socketPair(1024);
    const reason = closeReason(pair.server);
    pair.rawClient.destroy();
    expect((await reason).code).toBe('ERR_LINK_CLOSED');
    await pair.dispose();
  });

  it('frames arriving in single bytes are reassembled', async () => {
    const pair = await socketPair(1024);
    const got: number[][] = [];
    const done = new Promise<void>((resolve) =>
      pair.server.onMessage((frame) => {
        got.push([...frame]);
        if (got.length === 2) resolve();
      }),
    );
    const bytes = [...encodeFrame(new Uint8Array([1, 2])), ...encodeFrame(new Uint8Array([3]))];
    for (const byte of bytes) pair.rawClient.write(new Uint8Array([byte]));
    await done;
    expect(got).toEqual([[1, 2], [3]]);
    await pair.dispose();
  });
});

describe('defineTransport', () => {
  it('validates the definition', () => {
    expect(() => defineTransport({ name: '', connect: async () => ({}) as TransportChannel })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
  });

  it('passes a resolved maxFrameBytes and honours an aborted signal', async () => {
    const seen: number[] = [];
    const transport = defineTransport<string>({
      name: 'fake',
      async connect(_target, options) {
        seen.push(options.maxFrameBytes);
        return {} as TransportChannel;
      },
    });
    expect(transport.name).toBe('fake');
    await transport.connect('x');
    await transport.connect('x', { maxFrameBytes: 10 });
    expect(seen).toEqual([16 * 1024 * 1024, 10]);
    await expect(transport.connect('x', { signal: AbortSignal.abort() })).rejects.toThrow();
    await expect(transport.connect('x', { maxFrameBytes: -1 })).rejects.toMatchObject({
      code: 'ERR_INVALID_ARGUMENT',
    });
  });
});
