import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, openSession } from '@rjob/core';
import { acceptOneLink, linkPair, runTransportConformance } from '@rjob/core/testing';
import { describe, expect, it } from 'vitest';
import { COMMAND_EXITED, commandTransport } from './command-transport.js';

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

  it('a command that exits with a failure closes the link with ERR_COMMAND_EXITED', async () => {
    const link = await commandTransport.connect({ command: '/bin/sh', args: ['-c', 'exit 3'] });
    const reason = await new Promise((resolve) => link.onClose(resolve));
    expect(reason).toMatchObject({ code: COMMAND_EXITED, details: { exitCode: 3 } });
  });

  it('a session through a failing command keeps the code (what `docker exec` on a missing container does)', async () => {
    const opening = openSession(
      commandTransport,
      { command: '/bin/sh', args: ['-c', 'echo "Error: No such container: web1" >&2; exit 1'] },
      { computerName: 'web1', autoReconnect: false },
    );
    await expect(opening).rejects.toMatchObject({ code: COMMAND_EXITED, details: { exitCode: 1 } });
  });

  it('a command that exits cleanly closes the link as an ordinary close', async () => {
    const link = await commandTransport.connect({ command: '/bin/sh', args: ['-c', 'exit 0'] });
    const reason = await new Promise((resolve) => link.onClose(resolve));
    expect(reason).toMatchObject({ code: 'ERR_LINK_CLOSED' });
  });
});

describe('the command transport as an rjob plugin (cmd://NAME)', () => {
  it('takes cmd:// targets and runs the template with NAME in it', async () => {
    const { default: plugin, cmdTargets } = await import('./plugin.js');
    expect(plugin.transports).toEqual([cmdTargets]);
    expect(cmdTargets.accepts('cmd://web1')).toBe(true);
    expect(cmdTargets.accepts('web1')).toBe(false);
    const settings = {
      env: { RJOB_CMD_TEMPLATE: 'kubectl exec -i {name} -- rjob agent --stdio' },
      cwd: undefined,
      connectTimeoutMs: undefined,
    };
    const resolved = await cmdTargets.resolve('cmd://web1', settings);
    expect(resolved).toMatchObject({
      transport: commandTransport,
      computerName: 'web1',
      target: { command: 'kubectl', args: ['exec', '-i', 'web1', '--', 'rjob', 'agent', '--stdio'] },
    });
    await expect(cmdTargets.resolve('cmd://a b', settings)).rejects.toMatchObject({
      code: ErrorCode.InvalidArgument,
    });
  });
});
