import type { Readable } from 'node:stream';
import { RjobError } from '@rjob/core';

/**
 * The file descriptor a command started with `reasonChannel: true` finds its reason channel on.
 * The job's own stdout and stderr (and whatever they relay) cannot reach it.
 */
export const REASON_CHANNEL_FD = 3;

/** More than any reason needs; the rest of a runaway channel is read and dropped. */
const MAX_CHANNEL_BYTES = 64 * 1024;
const MAX_MESSAGE_CHARS = 4096;
const CODE_PATTERN = /^ERR_[A-Z0-9_]{1,64}$/;

/** What a child may report as its failure reason: an RjobError's coded fields. */
export interface ReportedReason {
  /** A stable error code, `ERR_` then capitals, digits and underscores. */
  code: string;
  message: string;
  exitCode?: number;
  signal?: string;
  timedOut?: boolean;
  /** Plain JSON facts (host, port, ...). */
  details?: Record<string, unknown>;
}

/**
 * One reason record as a child writes it on its reason channel: a line of JSON. Details that cannot
 * be written as JSON are left out rather than failing the report.
 */
export function reasonRecord(reason: ReportedReason): string {
  const record: ReportedReason = { code: reason.code, message: reason.message };
  if (reason.exitCode !== undefined) record.exitCode = reason.exitCode;
  if (reason.signal !== undefined) record.signal = reason.signal;
  if (reason.timedOut !== undefined) record.timedOut = reason.timedOut;
  if (reason.details !== undefined) {
    try {
      return `${JSON.stringify({ ...record, details: reason.details })}\n`;
    } catch {
      // bigint or a cycle: the reason without its details
    }
  }
  return `${JSON.stringify(record)}\n`;
}

/**
 * Collects what a child writes on its reason channel; `reason()` (once the child has closed its
 * pipes) is the last well-formed record as an RjobError, or undefined when there is none.
 */
export function readReasonChannel(stream: Readable): { reason(): RjobError | undefined } {
  const chunks: Buffer[] = [];
  let bytes = 0;
  stream.on('data', (chunk: Buffer) => {
    if (bytes >= MAX_CHANNEL_BYTES) return;
    const kept = chunk.subarray(0, MAX_CHANNEL_BYTES - bytes);
    chunks.push(kept);
    bytes += kept.length;
  });
  // A child that never opened the channel, or closed it oddly, just reports nothing.
  stream.on('error', () => {});
  return {
    reason() {
      const lines = Buffer.concat(chunks).toString('utf8').split('\n');
      for (let i = lines.length - 1; i >= 0; i--) {
        const reason = parseReasonRecord(lines[i]!);
        if (reason) return reason;
      }
      return undefined;
    },
  };
}

/** A record as {@link reasonRecord} writes it, checked field by field; anything else is ignored. */
export function parseReasonRecord(line: string): RjobError | undefined {
  if (line.trim() === '') return undefined;
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const record = value as Record<string, unknown>;
  const { code, message, exitCode, signal, timedOut, details } = record;
  if (typeof code !== 'string' || !CODE_PATTERN.test(code)) return undefined;
  if (typeof message !== 'string') return undefined;
  if (exitCode !== undefined && !Number.isInteger(exitCode)) return undefined;
  if (signal !== undefined && (typeof signal !== 'string' || signal.length > 32)) return undefined;
  if (timedOut !== undefined && typeof timedOut !== 'boolean') return undefined;
  if (details !== undefined && (typeof details !== 'object' || details === null || Array.isArray(details)))
    return undefined;
  return new RjobError(code, message.slice(0, MAX_MESSAGE_CHARS), {
    ...(exitCode === undefined ? {} : { exitCode: exitCode as number }),
    ...(signal === undefined ? {} : { signal }),
    ...(timedOut === undefined ? {} : { timedOut }),
    ...(details === undefined ? {} : { details: details as Record<string, unknown> }),
  });
}
