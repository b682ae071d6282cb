import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, JobManager, RjobError } from '@rjob/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { processJobType } from './process-job-type.js';

let jobs: JobManager;
let dir: string;

beforeEach(async () => {
  jobs = new JobManager({ types: [processJobType()] });
  dir = await mkdtemp(join(tmpdir(), 'rjob-stdout-bytes-'));
});

afterEach(async () => {
  await jobs.close();
  await rm(dir, { recursive: true, force: true });
});

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

describe("BackgroundJob stdout: 'bytes'", () => {
  it('delivers binary output byte for byte: invalid UTF-8, CR, NUL and no final newline', async () => {
    // Random bytes are nearly never valid UTF-8; the line mode would replace and split them.
    const payload = Buffer.concat([randomBytes(300_000), Buffer.from([0xff, 0xfe, 0x0d, 0x00, 0xc3])]);
    const file = join(dir, 'blob.bin');
    await writeFile(file, payload);
    const job = await jobs.start('process', { command: `cat '${file}'; echo done >&2`, stdout: 'bytes' });
    const records = await jobs.receive(job, { wait: true });
    expect(job.state).toBe('Completed');
    const output = records.filter((r) => r.stream === 'output');
    expect(output.length).toBeGreaterThan(0);
    for (const record of output) expect(Buffer.isBuffer(record.data)).toBe(true);
    const joined = Buffer.concat(output.map((r) => r.data as Buffer));
    expect(joined.length).toBe(payload.length);
    expect(sha256(joined)).toBe(sha256(payload));
    // stderr stays lines.
    expect(records.filter((r) => r.stream === 'error').map((r) => r.data)).toEqual(['done']);
  });

  it('keeps the line mode the default, and the same text read both ways has the same bytes', async () => {
    const command = "printf 'one\\ntwo\\r\\nthree'";
    const lines = await jobs.receive(await jobs.start('process', { command }), { wait: true });
    expect(lines.map((r) => r.data)).toEqual(['one', 'two', 'three']);
    const bytes = await jobs.receive(await jobs.start('process', { command, stdout: 'bytes' }), {
      wait: true,
    });
    expect(Buffer.concat(bytes.map((r) => r.data as Buffer)).toString('latin1')).toBe('one\ntwo\r\nthree');
  });

  it('refuses a stdout mode it does not know, with a code, and other jobs run on', async () => {
    const other = await jobs.start('process', { command: 'echo fine' });
    const refused = await jobs.start('process', { command: 'true', stdout: 'text' });
    await jobs.wait(refused);
    expect(refused.state).toBe('Failed');
    expect(RjobError.hasCode(refused.reason, ErrorCode.InvalidArgument)).toBe(true);
    expect(refused.reason?.message).toContain("'lines' or 'bytes'");
    expect((await jobs.receive(other, { wait: true })).map((r) => r.data)).toEqual(['fine']);
  });

  it('pauses a bytes producer at the buffer bound and still delivers everything', async () => {
    const small = new JobManager({ types: [processJobType()], maxBufferedBytes: 256 * 1024 });
    try {
      const total = 8 * 1024 * 1024;
      const job = await small.start('process', { command: `head -c ${total} /dev/zero`, stdout: 'bytes' });
      let bytes = 0;
      let peak = 0;
      for await (const record of small.receiveStream(job)) {
        if (record.stream === 'output') bytes += (record.data as Buffer).length;
        peak = Math.max(peak, job.buffer.bytes);
      }
      expect(bytes).toBe(total);
      // The bound plus at most one pipe read (64 KiB) and its record overhead.
      expect(peak).toBeLessThanOrEqual(256 * 1024 + 128 * 1024);
    } finally {
      await small.close();
    }
  });
});
