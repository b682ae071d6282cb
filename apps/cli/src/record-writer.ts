/**
 * Writes received records to stdout / stderr and says which ones were written: a record counts as
 * received (and may be consumed on the agent) only once its bytes were handed to the stream
 * (docs/cli.md, "Nothing lost"). Consecutive records for the same stream are written together, a
 * write at a time, so a fast job's output costs one write per batch, not per line; the order of
 * stdout and stderr lines is kept.
 */
import type { RemoteRecord } from '@rjob/core';
import type { CliIo } from './io.js';

/** Pending bytes above which `add` asks its caller to wait for the write. */
const HIGH_WATER_BYTES = 256 * 1024;

export interface FormattedRecord {
  target: 'stdout' | 'stderr';
  chunk: string | Uint8Array;
}

export class RecordWriter {
  readonly #io: CliIo;
  readonly #format: (record: RemoteRecord) => FormattedRecord | undefined;
  readonly #written: (records: RemoteRecord[]) => void;
  #target: 'stdout' | 'stderr' | undefined;
  #chunks: Array<string | Uint8Array> = [];
  #records: RemoteRecord[] = [];
  #bytes = 0;
  #scheduled = false;
  /** Resolves when every write issued so far has called back. */
  #writes: Promise<void> = Promise.resolve();
  #error: NodeJS.ErrnoException | undefined;

  /**
   * @param format what a record prints as (undefined: nothing, and it counts as written).
   * @param written called, in order, with the records whose bytes the stream took.
   */
  constructor(
    io: CliIo,
    format: (record: RemoteRecord) => FormattedRecord | undefined,
    written: (records: RemoteRecord[]) => void,
  ) {
    this.#io = io;
    this.#format = format;
    this.#written = written;
  }

  /** The write error that stopped the writer (EPIPE once the reader of a pipe went away). */
  get error(): NodeJS.ErrnoException | undefined {
    return this.#error;
  }

  /** Queues a record; returns a promise while much is waiting to be written. */
  add(record: RemoteRecord): void | Promise<void> {
    if (this.#error) return;
    const formatted = this.#format(record);
    const target = formatted?.target ?? this.#target ?? 'stdout';
    if (this.#target !== undefined && target !== this.#target) this.#write();
    this.#target = target;
    if (formatted) {
      this.#chunks.push(formatted.chunk);
      this.#bytes += formatted.chunk.length;
    }
    this.#records.push(record);
    if (this.#bytes >= HIGH_WATER_BYTES) {
      this.#write();
      return this.#writes;
    }
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => {
        this.#scheduled = false;
        this.#write();
      });
    }
  }

  /** Writes what is queued; resolves once every write called back. */
  flush(): Promise<void> {
    this.#write();
    return this.#writes;
  }

  #write(): void {
    const records = this.#records;
    const chunks = this.#chunks;
    const target = this.#target;
    this.#records = [];
    this.#chunks = [];
    this.#bytes = 0;
    if (records.length === 0 || this.#error) return;
    if (chunks.length === 0 || target === undefined) {
      // Nothing to show (progress off a terminal): taken all the same, after what came before.
      this.#writes = this.#writes.then(() => {
        if (!this.#error) this.#written(records);
      });
      return;
    }
    const stream = this.#io[target];
    const data = chunks.every((chunk) => typeof chunk === 'string')
      ? chunks.join('')
      : Buffer.concat(chunks.map((chunk) => (typeof chunk === 'string' ? Buffer.from(chunk) : chunk)));
    const done = new Promise<void>((resolveWrite) => {
      try {
        stream.write(data, (error) => {
          if (error) this.#error ??= error as NodeJS.ErrnoException;
          resolveWrite();
        });
      } catch (error) {
        this.#error ??= error as NodeJS.ErrnoException;
        resolveWrite();
      }
    });
    this.#writes = Promise.all([this.#writes, done]).then(() => {
      // A failed write, or one after it, may not have reached the reader: not taken.
      if (!this.#error) this.#written(records);
    });
  }
}
