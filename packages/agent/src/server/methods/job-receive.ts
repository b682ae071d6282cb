/**
 * `job.receive` and `job.receiveToFile`: Receive-Job in one answer, or with its output written to
 * a file on the agent's host.
 */
import { writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { resolve } from 'node:path';
import { inspect } from 'node:util';
import { type ReceiveToFileResult, RjobError } from '@rjob/core';
import { decodeRecordRuns, encodeRecordRuns } from '@rjob/core/codec';
import { AgentErrorCode } from '../../error-codes.js';
import { answer, answerReporting } from '../reply.js';
import { invalidParams, objectParams, optionalBoolean, requiredString, wireSelector } from '../wire.js';
import { ANSWERED_LATER, type MethodCall, type MethodTable, type SessionScope } from './context.js';

export const jobReceiveMethods: MethodTable = {
  'job.receive': receive,
  'job.receiveToFile': (scope, { params }) => receiveToFile(scope, params),
};

/**
 * Receive-Job in one answer, packed (`{ entries }`: a run of record entries per job, see
 * PackedRecordRuns). The records are held, not consumed, until the client acknowledged the answer: an answer that cannot be sent (larger than a frame) or never arrives consumes
 * nothing. Answers are bounded by the frame size; `job.subscribe` with `follow: false` streams
 * the same records in batches, whatever their number.
 */
async function receive(
  scope: SessionScope,
  { params, requestId, channel }: MethodCall,
): Promise<typeof ANSWERED_LATER> {
  const p = objectParams(params, 'job.receive');
  const keep = optionalBoolean(p, 'keep') ?? false;
  const jobs = scope.select(wireSelector(p.selector));
  if (keep || !scope.records.holdsAside) {
    // Without a disk spool there is nothing to give back: consumed as read (memory agents only).
    answer(channel, requestId, { result: { entries: await scope.records.receive(jobs, keep) } });
    return ANSWERED_LATER;
  }
  const held = await scope.records.hold(jobs);
  const { seq, sent } = answerReporting(channel, requestId, { result: { entries: held.runs } });
  if (!sent) {
    held.release();
    return ANSWERED_LATER;
  }
  void channel.whenAcked(seq).then(
    () => held.commit(),
    () => held.release(),
  );
  return ANSWERED_LATER;
}

/**
 * `Receive-Job … > path`: the output stream goes to the file, every other record back to the
 * caller (as PowerShell's `>` redirects only the success stream and the rest reaches the host).
 * The records are held, not consumed, until the file is written: a write that fails (missing
 * directory, no permission, disk full) consumes nothing, so they can still be received.
 */
async function receiveToFile(scope: SessionScope, params: unknown): Promise<ReceiveToFileResult> {
  const p = objectParams(params, 'job.receiveToFile');
  const keep = optionalBoolean(p, 'keep') ?? false;
  const append = optionalBoolean(p, 'append') ?? false;
  const path = filePath(scope.cwd, requiredString(p, 'path', 4096));
  const jobs = scope.select(wireSelector(p.selector));
  const held = keep
    ? { runs: await scope.records.receive(jobs, true), commit: async () => {}, release: () => {} }
    : await scope.records.hold(jobs);
  // The one place records are looked at on the agent: the file gets their text.
  const records = decodeRecordRuns(held.runs);
  const output = records.filter((record) => record.stream === 'output' && !record.reason);
  const other = records.filter((record) => record.stream !== 'output' || record.reason);
  const data = Buffer.from(output.map((record) => outputLine(record.data)).join(''), 'utf8');
  try {
    // As a shell's `>` / `>>`: created with the default mode under the agent's umask.
    await writeFile(path, data, { flag: append ? 'a' : 'w' });
  } catch (error) {
    held.release();
    const { code, syscall } = error as NodeJS.ErrnoException;
    throw new RjobError(AgentErrorCode.FileWrite, `Cannot write ${path}: ${(error as Error).message}`, {
      cause: error,
      details: { path, ...(code === undefined ? {} : { osCode: code }), ...(syscall ? { syscall } : {}) },
    });
  }
  await held.commit();
  return { path, records: output.length, bytes: data.length, other: encodeRecordRuns(other) };
}

/** A path as the session's user means it: `~/` is the agent user's home, relative is from cwd. */
function filePath(cwd: string, path: string): string {
  if (path.includes('\0')) throw invalidParams('path must not contain NUL characters.');
  if (path === '~') return homedir();
  if (path.startsWith('~/')) return resolve(homedir(), path.slice(2));
  return resolve(cwd, path);
}

/**
 * One output record as a line of the file, as the CLI prints it: a string as it is (one newline
 * added unless it ends with one), an error as its message and code, anything else inspected on
 * one line. So `receive … > FILE` gives the same bytes as `rjob receive … > FILE` locally.
 */
function outputLine(data: unknown): string {
  let text: string;
  if (typeof data === 'string') text = data;
  else if (isErrorLike(data))
    text = typeof data.code === 'string' ? `${data.message} (${data.code})` : data.message;
  else text = inspect(data, { depth: 6, breakLength: Number.POSITIVE_INFINITY, colors: false });
  return text.endsWith('\n') ? text : `${text}\n`;
}

function isErrorLike(value: unknown): value is { message: string; code?: unknown } {
  if (value instanceof Error) return true;
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { message?: unknown }).message === 'string' &&
    typeof (value as { name?: unknown }).name === 'string'
  );
}
