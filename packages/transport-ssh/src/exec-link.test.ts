/**
 * The exec/socket channel link: frames written in one event-loop turn leave as one channel write
 * (one SSH packet), in order, and a congested channel still delivers every frame. The channel is
 * a stand-in Duplex here; ssh-transport.test.ts drives the same link through a real sshd.
 */
import { EventEmitter } from 'node:events';
import { Duplex } from 'node:stream';
import { FrameDecoder } from '@rjob/core/protocol';
import type { ClientChannel } from 'ssh2';
import { describe, expect, it } from 'vitest';
import { linkFromExecChannel } from './exec-link.js';
import type { SshHostConfig } from './ssh-config.js';

const HOST = { alias: 'h', hostName: '127.0.0.1', port: 22 } as SshHostConfig;

/** A channel that records each write; `congested` makes write() say false until drained. */
function fakeChannel(options: { congested?: boolean } = {}) {
  const writes: Buffer[] = [];
  let congested = options.congested ?? false;
  const channel = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      callback();
      return chunk;
    },
  }) as Duplex & { stderr: EventEmitter; close(): void };
  channel.stderr = new EventEmitter();
  channel.close = () => channel.emit('close');
  // ssh2's channel.write: one call, one packet; false while its window is full.
  channel.write = ((chunk: Buffer) => {
    writes.push(Buffer.from(chunk));
    return !congested;
  }) as typeof channel.write;
  return {
    channel: channel as unknown as ClientChannel,
    writes,
    drain() {
      congested = false;
      channel.emit('drain');
    },
  };
}

function decodeAll(writes: Buffer[]): string[] {
  const decoder = new FrameDecoder();
  return writes.flatMap((chunk) => decoder.push(chunk)).map((frame) => Buffer.from(frame).toString());
}

/** The link the transport builds on an agent channel. */
const linkOver = (channel: ClientChannel) =>
  linkFromExecChannel(channel, {
    command: 'rjob agent --stdio',
    host: HOST,
    maxFrameBytes: 1 << 20,
    onGone() {},
  });

const turn = () => new Promise((resolve) => setImmediate(resolve));

describe('linkFromExecChannel', () => {
  it('sends the frames of one turn as one channel write, in order', async () => {
    const { channel, writes } = fakeChannel();
    const link = linkOver(channel);
    for (const text of ['hello', 'open', 'ack', 'credit']) link.send(Buffer.from(text));
    expect(writes).toHaveLength(0);
    await turn();
    await turn();
    expect(writes).toHaveLength(1);
    expect(decodeAll(writes)).toEqual(['hello', 'open', 'ack', 'credit']);

    link.send(Buffer.from('request'));
    await turn();
    await turn();
    expect(writes).toHaveLength(2);
    expect(decodeAll(writes)).toEqual(['hello', 'open', 'ack', 'credit', 'request']);
    link.close();
  });

  it('keeps every frame, in order, while the channel is congested, and drains', async () => {
    const { channel, writes, drain } = fakeChannel({ congested: true });
    const link = linkOver(channel);
    let drained = 0;
    link.onDrain?.(() => drained++);
    const sent: string[] = [];
    const body = 'x'.repeat(4096);
    const sendTurn = (from: number) => {
      let refused = false;
      // 10 frames of 4 KiB: past the relay's high-water mark, within one gathered write.
      for (let i = from; i < from + 10; i++) {
        sent.push(`${i}:${body}`);
        if (link.send(Buffer.from(sent.at(-1)!)) === false) refused = true;
      }
      return refused;
    };
    expect(sendTurn(0)).toBe(true);
    await turn();
    await turn();
    // The first turn went out as one write, which waits for the channel's drain.
    expect(writes).toHaveLength(1);
    sendTurn(10);
    await turn();
    await turn();
    expect(writes).toHaveLength(1);
    drain();
    for (let i = 0; i < 5; i++) await turn();
    expect(writes).toHaveLength(2);
    expect(decodeAll(writes)).toEqual(sent);
    expect(drained).toBeGreaterThan(0);
    link.close();
  });

  it('writes large frames as they are, not copied together, in order', async () => {
    const { channel, writes } = fakeChannel();
    const link = linkOver(channel);
    const sent = ['a', 'b', 'c'].map((letter) => letter.repeat(40 * 1024));
    for (const text of sent) link.send(Buffer.from(text));
    await turn();
    await turn();
    // 120 KiB in one turn: more than is worth copying into one buffer.
    expect(writes.length).toBeGreaterThan(1);
    expect(decodeAll(writes)).toEqual(sent);
    link.close();
  });
});
