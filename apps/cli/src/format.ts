import { inspect } from 'node:util';
import type { RemoteJobInfo, RemoteRecord, SessionInfo } from '@rjob/core';
import { type CliIo, useColor } from './io.js';

/** Left-aligned columns two spaces apart, as PowerShell's table view. */
export function table(headers: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return `${[line(headers), ...rows.map(line)].join('\n')}\n`;
}

export const JOB_COLUMNS = ['Id', 'Name', 'Type', 'State', 'HasMoreData', 'Location', 'Command'] as const;
/**
 * ComputerName is the target as the user gave it (alias, user@host:port, URL), so that sessions to
 * hosts that call themselves the same stay apart; RemoteHost is what the agent there calls itself.
 */
export const SESSION_COLUMNS = [
  'Id',
  'Name',
  'Transport',
  'ComputerName',
  'RemoteHost',
  'State',
  'Availability',
] as const;

const pwshBool = (value: boolean): string => (value ? 'True' : 'False');

/** One line per command, so a table row never wraps into the next. */
const oneLine = (text: string): string => text.replace(/\s*\n\s*/g, '; ');

/**
 * The State column: a failed process job's exit code or signal in brackets (`Failed (3)`,
 * `Failed (SIGKILL)`), as a shell user looks for it.
 */
export function stateText(job: RemoteJobInfo): string {
  const reason = job.reason;
  if (job.state !== 'Failed' || !reason) return job.state;
  if (reason.exitCode !== undefined) return `${job.state} (${reason.exitCode})`;
  if (reason.signal !== undefined) return `${job.state} (${reason.signal})`;
  return job.state;
}

export function jobRow(job: RemoteJobInfo): string[] {
  return [
    String(job.id),
    job.name,
    job.type,
    stateText(job),
    pwshBool(job.hasMoreData),
    job.location,
    oneLine(job.command),
  ];
}

/**
 * The jobs as a table. `columns` (a terminal's width): each line is cut to it, so a long command
 * ends in `…` instead of wrapping (the Command column is last).
 */
export function jobTable(jobs: readonly RemoteJobInfo[], options: { columns?: number } = {}): string {
  // A Label column only when a job has one (`rjob start --label`), just before Command.
  const labelled = jobs.some((job) => job.label !== undefined);
  const headers = labelled ? [...JOB_COLUMNS.slice(0, -1), 'Label', 'Command'] : JOB_COLUMNS;
  const rows = jobs.map((job) => {
    const row = jobRow(job);
    if (labelled) row.splice(row.length - 1, 0, oneLine(job.label ?? ''));
    return row;
  });
  const text = table(headers, rows);
  const { columns } = options;
  if (columns === undefined || columns < 20) return text;
  return text
    .split('\n')
    .map((line) => (line.length > columns ? `${line.slice(0, columns - 1)}…` : line))
    .join('\n');
}

export interface SessionRow {
  id: number | string;
  name: string;
  transport: string;
  computerName: string;
  /** The agent's own name for its host; empty when it could not be asked. */
  remoteHost: string;
  state: SessionInfo['state'] | 'Unknown';
  availability: SessionInfo['availability'] | 'Unknown';
}

export function sessionTable(rows: readonly SessionRow[]): string {
  return table(
    SESSION_COLUMNS,
    rows.map((r) => [
      String(r.id),
      r.name,
      r.transport,
      r.computerName,
      r.remoteHost || '-',
      r.state,
      r.availability,
    ]),
  );
}

/** A record's data as text: strings as they are, everything else inspected on one line. */
export function dataText(data: unknown): string {
  if (typeof data === 'string') return data;
  // A reason can arrive as an Error or still serialized ({ name, message, code }).
  if (data instanceof Error || isErrorLike(data)) {
    const { message, code } = data as { message: string; code?: unknown };
    return typeof code === 'string' ? `${message} (${code})` : message;
  }
  return inspect(data, { depth: 6, breakLength: Number.POSITIVE_INFINITY, colors: false });
}

const LABELS: Partial<Record<RemoteRecord['stream'], string>> = {
  warning: 'WARNING: ',
  verbose: 'VERBOSE: ',
  debug: 'DEBUG: ',
};

/** ANSI colours for labelled streams, only when allowed (NO_COLOR, a terminal). */
const COLORS: Partial<Record<RemoteRecord['stream'], [string, string]>> = {
  error: ['\u001b[31m', '\u001b[39m'],
  warning: ['\u001b[33m', '\u001b[39m'],
  verbose: ['\u001b[36m', '\u001b[39m'],
  debug: ['\u001b[36m', '\u001b[39m'],
};

/**
 * Writes one record the way a shell user expects: output and information on stdout, the error
 * stream on stderr, warning / verbose / debug labelled on stderr, progress only on a terminal.
 * `prefix` (fan-out) goes before every line so interleaved hosts stay readable.
 */
export function printRecord(io: CliIo, record: RemoteRecord, prefix = ''): void {
  const printed = formatRecord(io, record, prefix);
  if (printed) io[printed.target].write(printed.chunk);
}

/** What {@link printRecord} writes, and where; undefined for what it does not show. */
export function formatRecord(
  io: CliIo,
  record: RemoteRecord,
  prefix = '',
): { target: 'stdout' | 'stderr'; chunk: string | Uint8Array } | undefined {
  const stream = record.stream;
  if (stream === 'progress') {
    return io.stderr.isTTY
      ? { target: 'stderr', chunk: `${prefix}PROGRESS: ${dataText(record.data)}\n` }
      : undefined;
  }
  const toStdout = stream === 'output' || stream === 'information';
  // `--bytes` output: the chunk exactly as the command wrote it, no prefix and no added newline.
  if (stream === 'output' && record.data instanceof Uint8Array)
    return { target: 'stdout', chunk: record.data };
  const target = toStdout ? 'stdout' : 'stderr';
  let label = LABELS[stream] ?? '';
  if (record.reason) label = 'FAILED: ';
  let text = dataText(record.data);
  if (text.endsWith('\n')) text = text.slice(0, -1);
  const color = !toStdout && useColor(io, io[target]) ? COLORS[stream] : undefined;
  const body =
    prefix || label
      ? text
          .split('\n')
          .map((line) => `${prefix}${label}${line}`)
          .join('\n')
      : text;
  return { target, chunk: `${color ? `${color[0]}${body}${color[1]}` : body}\n` };
}

/** `--ndjson`: one JSON object per record, values made JSON-safe. */
export function recordJson(record: RemoteRecord): string {
  return JSON.stringify(
    {
      stream: record.stream,
      data: record.data,
      jobId: record.jobId,
      seq: record.seq,
      timeMs: record.timeMs,
      location: record.location,
      computerName: record.computerName,
      ...(record.reason ? { reason: true } : {}),
    },
    jsonReplacer,
  );
}

export function jsonReplacer(_key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Error) {
    const code = (value as { code?: unknown }).code;
    return { name: value.name, message: value.message, ...(typeof code === 'string' ? { code } : {}) };
  }
  if (value instanceof Map) return Object.fromEntries(value);
  if (value instanceof Set) return [...value];
  if (ArrayBuffer.isView(value) && !(value instanceof DataView))
    return Array.from(value as unknown as ArrayLike<number>);
  return value;
}

/** A job for `--json`: its reason as code and message, with the exit code, signal or timeout it names. */
export function jobJson(job: RemoteJobInfo): unknown {
  const { reason, ...rest } = job;
  if (!reason)
    return job.type === 'BackgroundJob' && job.state === 'Completed' ? { ...rest, exitCode: 0 } : rest;
  return {
    ...rest,
    ...(reason.exitCode === undefined ? {} : { exitCode: reason.exitCode }),
    reason: {
      message: reason.message,
      code: reason.code,
      ...(reason.exitCode === undefined ? {} : { exitCode: reason.exitCode }),
      ...(reason.signal === undefined ? {} : { signal: reason.signal }),
      ...(reason.timedOut === undefined ? {} : { timedOut: reason.timedOut }),
    },
  };
}

function isErrorLike(value: unknown): boolean {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { message?: unknown }).message === 'string' &&
    typeof (value as { name?: unknown }).name === 'string'
  );
}
