import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode } from '@rjob/core';
import { acceptOneLink, linkPair, runTransportConformance } from '@rjob/core/testing';
import { describe, expect, it } from 'vitest';
import { commandTransport } from './command-transport.js';

// The command under test is a small node program that pipes its stdio to a Unix socket this test
// listens on, so every frame really crosses a child's stdin and stdout as with `docker exec -i`.
const BRIDGE = `
const net = require('node:net');
const socket = net.connect(process.argv[1]);
process.stdin.pipe(socket);
socket.pipe(process.stdout);
socket.on('close', () => process.exit(0));
process.stdin.on('end', () => socket.end());
`;

runTransportConformance(
  async ({ maxFrameBytes }) => {
    const dir = mkdtempSync(join(tmpdir(), 'rjob-command-'));
    const path = join(dir, 'bridge.sock');
    const listener = await acceptOneLink(path, { maxFrameBytes });
    const client = await commandTransport.connect(
      { command: process.execPath, args: ['-e', BRIDGE, path] },
      { maxFrameBytes },
    );
    return linkPair(client, await listener.link, async () => {
      await listener.close();
      rmSync(dir, { recursive: true, force: true });
    });
  },
  { name: 'command transport conformance', test: { describe, it } },
);

describe('command transport', () => {
  it('a command that does not exist is a coded error', async () => {
    await expect(commandTransport.connect({ command: '/nonexistent/rjob-agent' })).rejects.toMatchObject({
      code: ErrorCode.JobStartFailed,
    });
  });

  it('the link closes when the command exits', async () => {
    const link = await commandTransport.connect({ command: '/bin/sh', args: ['-c', 'exit 3'] });
    const reason = await new Promise((resolve) => link.onClose(resolve));
    // Its stdout ended first, which the framing layer reports as a closed link.
    expect(reason).toMatchObject({ code: 'ERR_LINK_CLOSED' });
  });
});
