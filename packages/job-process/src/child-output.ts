import type { ChildProcess } from 'node:child_process';
import type { JobContext } from '@rjob/core';
import { LineSplitter } from './line-splitter.js';

// The manager's own estimate for a string record (see estimateSize in @rjob/core), given directly
// so the hot path does not repeat its type checks.
const RECORD_OVERHEAD_BYTES = 48;

/** Flow control over a child's stdout and stderr. */
export interface ChildOutput {
  /** Stop reading the pipes: once they fill, the child blocks on its next write. */
  pause(): void;
  resume(): void;
  /**
   * Read everything from now on, whatever pause says. For when the group is being killed: what
   * is left is bounded by the pipe buffers, and a job must not sit in Stopping waiting for a
   * receiver that never comes.
   */
  drain(): void;
}

/**
 * Turns a child's stdout lines into `output` records and its stderr lines into `error` records.
 * The streams are decoded as UTF-8 by Node's decoder, which keeps a character split across two
 * reads whole. stdout and stderr are two pipes, so the order between them is the order the owner
 * read them in; within each, order is exact.
 */
export function pipeOutput(
  child: ChildProcess,
  context: JobContext,
  maxLineChars: number,
  stdoutBytes = false,
): ChildOutput {
  const stdout = child.stdout!;
  const stderr = child.stderr!;
  let paused = false;
  let draining = false;

  const out = new LineSplitter(
    (line) => context.emit('output', line, RECORD_OVERHEAD_BYTES + line.length),
    maxLineChars,
  );
  const err = new LineSplitter(
    (line) => context.emit('error', line, RECORD_OVERHEAD_BYTES + line.length),
    maxLineChars,
  );
  stderr.setEncoding('utf8');
  if (stdoutBytes) {
    // Each chunk as read: its bytes untouched, however it splits lines or characters.
    stdout.on('data', (chunk: Buffer) => context.emit('output', chunk, RECORD_OVERHEAD_BYTES + chunk.length));
  } else {
    stdout.setEncoding('utf8');
    stdout.on('data', (chunk: string) => out.write(chunk));
    stdout.on('end', () => out.end());
  }
  stderr.on('data', (chunk: string) => err.write(chunk));
  stderr.on('end', () => err.end());

  return {
    pause() {
      if (paused || draining) return;
      paused = true;
      stdout.pause();
      stderr.pause();
    },
    resume() {
      if (!paused) return;
      paused = false;
      stdout.resume();
      stderr.resume();
    },
    drain() {
      draining = true;
      paused = false;
      stdout.resume();
      stderr.resume();
    },
  };
}

/** Signals a whole process group, ignoring ESRCH (the group is already gone). */
export function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // already gone
  }
}
