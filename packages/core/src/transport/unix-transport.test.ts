import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../errors.js';
import { runTransportConformance } from '../testing/transport-conformance.js';
import { channelFromDuplex } from './transport.js';
import { unixSocketTransport } from './unix-transport.js';

runTransportConformance(
  async ({ maxFrameBytes }) => {
    const dir = mkdtempSync(join(tmpdir(), 'rjob-unix-'));
    const path = join(dir, 'agent.sock');
    const server = createServer();
    const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
    await new Promise<void>((resolve) => server.listen(path, resolve));
    const client = await unixSocketTransport.connect(path, { maxFrameBytes });
    const serverEnd = channelFromDuplex(await accepted, { maxFrameBytes });
    return {
      client,
      server: serverEnd,
      async dispose() {
        client.close();
        serverEnd.close();
        await new Promise((resolve) => server.close(resolve));
        rmSync(dir, { recursive: true, force: true });
      },
    };
  },
  { name: 'unix socket transport conformance' },
);

describe('unix socket transport', () => {
  it('a path nobody listens on is ERR_AGENT_UNREACHABLE', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rjob-unix-'));
    try {
      await expect(unixSocketTransport.connect(join(dir, 'none.sock'))).rejects.toMatchObject({
        code: ErrorCode.AgentUnreachable,
        details: { socketPath: join(dir, 'none.sock') },
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
