import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../errors.js';
import { runTransportConformance } from '../testing/transport-conformance.js';
import { acceptOneLink, linkPair } from '../testing/unix-link.js';
import { unixSocketTransport } from './unix-transport.js';

runTransportConformance(
  async ({ maxFrameBytes }) => {
    const dir = mkdtempSync(join(tmpdir(), 'rjob-unix-'));
    const path = join(dir, 'agent.sock');
    const listener = await acceptOneLink(path, { maxFrameBytes });
    const client = await unixSocketTransport.connect(path, { maxFrameBytes });
    return linkPair(client, await listener.link, async () => {
      await listener.close();
      rmSync(dir, { recursive: true, force: true });
    });
  },
  { name: 'unix socket transport conformance', test: { describe, it } },
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
