/**
 * Receive-Job: `rjob receive` and the record stream it shares with `rjob session receive`. A
 * record is consumed on the agent only once it was written.
 */
import type { RemoteRecord, Session } from '@rjob/core';
import { bool, parse, positiveInt, str } from '../args.js';
import { dataText, formatRecord, recordJson } from '../format.js';
import { helpFor } from '../help.js';
import { type CliIo, ExitCode } from '../io.js';
import { type FormattedRecord, RecordWriter } from '../record-writer.js';
import { onJobSession, withContext } from '../run-command.js';
import { findJobs, requireSelectors, SESSION_OPTION } from './jobs.js';

export async function receive(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(argv, {
    ...SESSION_OPTION,
    keep: { type: 'boolean', short: 'k' },
    wait: { type: 'boolean', short: 'w' },
    follow: { type: 'boolean', short: 'F' },
    tail: { type: 'string' },
    timestamps: { type: 'boolean' },
    ndjson: { type: 'boolean' },
  });
  if (values.help) return helpFor('receive', io);
  requireSelectors(positionals, 'receive');
  const tailFlag = str(values.tail);
  const tail = tailFlag === undefined ? undefined : positiveInt(tailFlag, '--tail');
  // `--follow` is `tail -f`: everything so far and what comes, until the jobs finish, consuming
  // nothing (`--wait --keep`). `--tail N` reads without consuming as well.
  const follow = bool(values.follow) || bool(values.wait);
  const keep = bool(values.keep) || bool(values.follow) || tail !== undefined;
  // Children of the selected jobs (a fan-out's hosts): their records are the parent's output, and
  // each child's location (its host) tells whose line it is, as invoke's `[host] ` prefix does.
  let childIds = new Set<number>();
  const stamp = (record: RemoteRecord): string =>
    values.timestamps ? `${new Date(record.timeMs).toISOString()} ` : '';
  const format = (record: RemoteRecord): FormattedRecord | undefined =>
    values.ndjson
      ? { target: 'stdout', chunk: `${recordJson(record)}\n` }
      : formatRecord(
          io,
          record,
          `${stamp(record)}${childIds.has(record.jobId) ? `[${record.location}] ` : ''}`,
        );
  return withContext(io, str(values['state-dir']), async (ctx) =>
    onJobSession(ctx, str(values.session), async (session) => {
      const jobs = await findJobs(session, positionals);
      const ids = jobs.map((job) => job.id);
      childIds = new Set(jobs.flatMap((job) => job.childIds));
      const failedShown = new Set<number>();
      // `--tail N`: the last N records held now; a follow then goes on after them.
      const seen = new Map<number, number>();
      const tailReasons = new Set<number>();
      if (tail !== undefined) {
        const held = await session.jobs.receive(ids, { keep: true });
        for (const record of held) seen.set(record.jobId, Math.max(seen.get(record.jobId) ?? 0, record.seq));
        for (const record of held.slice(-tail)) {
          if (record.reason) {
            failedShown.add(record.jobId);
            tailReasons.add(record.jobId);
          }
          const printed = format(record);
          if (printed) io[printed.target].write(printed.chunk);
        }
      }
      if (tail === undefined || follow) {
        const streamed = await streamRecords(io, session, ids, {
          keep,
          follow,
          // A Failed job's reason comes last with every read: shown again unless the tail had it.
          format: (record) =>
            (record.reason ? tailReasons.has(record.jobId) : record.seq <= (seen.get(record.jobId) ?? -1))
              ? undefined
              : format(record),
        });
        for (const id of streamed.failedShown) failedShown.add(id);
        // Like other Unix tools: a reader that went away (`| head`) ends the command quietly.
        if (streamed.stopped === 'pipe') return ExitCode.BrokenPipe;
        if (streamed.stopped === 'interrupt') return ExitCode.Interrupted;
      }
      const after = await session.jobs.get({ ids, includeChildren: true });
      let failed = false;
      for (const job of after) {
        if (job.state !== 'Failed') continue;
        failed = true;
        // A parent's reason names its children's; each child's own reason is printed already.
        if (!failedShown.has(job.id) && job.reason && !values.ndjson) {
          io.stderr.write(`FAILED: job ${job.id} (${job.name}): ${dataText(job.reason)}\n`);
        }
      }
      return failed ? ExitCode.JobFailed : ExitCode.Ok;
    }),
  );
}

/**
 * Streams the jobs' records to stdout / stderr in bounded batches: what they hold now, or with
 * `follow` everything until they finished (`--wait`). A record is acknowledged (consumed on the
 * agent) only once its bytes were written; a closed pipe or Ctrl-C stops the stream, and every
 * record not written stays on the agent for the next receive.
 */
export function streamRecords(
  io: CliIo,
  session: Session<unknown>,
  ids: number[],
  options: { keep: boolean; follow: boolean; format: (record: RemoteRecord) => FormattedRecord | undefined },
): Promise<{ failedShown: Set<number>; stopped?: 'pipe' | 'interrupt' }> {
  const failedShown = new Set<number>();
  return new Promise((resolvePromise, reject) => {
    let finished = false;
    let offInterrupt = (): void => {};
    const writer = new RecordWriter(io, options.format, (records) => subscription.ack(records));
    const finish = (outcome: { stopped?: 'pipe' | 'interrupt' }, cancel: boolean): void => {
      if (finished) return;
      finished = true;
      offInterrupt();
      void (async () => {
        await writer.flush();
        // The acks of what was written go out first; cancelling gives the rest back.
        if (cancel) await subscription.cancel().catch(() => {});
        else await subscription.flush();
        resolvePromise({ failedShown, ...outcome });
      })().catch(reject);
    };
    const subscription = session.subscribe(
      ids,
      {
        onRecord(record) {
          if (finished) return;
          if (writer.error) return finish({ stopped: 'pipe' }, true);
          if (record.reason) failedShown.add(record.jobId);
          return writer.add(record);
        },
        onEnd() {
          finish(writer.error ? { stopped: 'pipe' } : {}, false);
        },
        onSessionEnd(reason) {
          if (!finished) reject(reason);
        },
      },
      { keep: options.keep, follow: options.follow, ack: 'manual' },
    );
    subscription.jobs.catch(reject);
    offInterrupt = onInterrupt(io, () => finish({ stopped: 'interrupt' }, true));
  });
}

/**
 * Ctrl-C while records stream: stop taking them, so what was written is acknowledged and the rest
 * stays on the agent. Only for the process's own terminal (not for commands run in-process).
 */
function onInterrupt(io: CliIo, stop: () => void): () => void {
  if (io.stdout !== process.stdout) return () => {};
  const handler = (): void => stop();
  process.once('SIGINT', handler);
  process.once('SIGTERM', handler);
  return () => {
    process.off('SIGINT', handler);
    process.off('SIGTERM', handler);
  };
}
