import type { JobRecord } from './records.js';

/**
 * A job's undelivered records, in emission order, with their weight in bytes for flow control.
 * Records are addressed by absolute position so a `keep` reader can hold a cursor while other
 * readers consume from the head.
 */
export class RecordBuffer {
  #records: JobRecord[] = [];
  #sizes: number[] = [];
  #head = 0;
  /** Absolute position of `#records[#head]`. */
  #base = 0;
  #bytes = 0;

  get bytes(): number {
    return this.#bytes;
  }

  get length(): number {
    return this.#records.length - this.#head;
  }

  /** Absolute position of the first undelivered record. */
  get start(): number {
    return this.#base;
  }

  /** Absolute position one past the last record. */
  get end(): number {
    return this.#base + this.length;
  }

  push(record: JobRecord, sizeBytes: number): void {
    this.#records.push(record);
    this.#sizes.push(sizeBytes);
    this.#bytes += sizeBytes;
  }

  /** Removes and returns the oldest record. */
  shift(): JobRecord | undefined {
    if (this.#head >= this.#records.length) return undefined;
    const record = this.#records[this.#head]!;
    this.#bytes -= this.#sizes[this.#head]!;
    // Drop the reference now; the slot itself is reclaimed by compact().
    (this.#records as (JobRecord | undefined)[])[this.#head] = undefined;
    this.#head++;
    this.#base++;
    this.#compact();
    return record;
  }

  /** Removes and returns every record. */
  takeAll(): JobRecord[] {
    const out = this.#records.slice(this.#head);
    this.#base += out.length;
    this.#records = [];
    this.#sizes = [];
    this.#head = 0;
    this.#bytes = 0;
    return out;
  }

  /** The record at an absolute position, if still held. */
  at(position: number): JobRecord | undefined {
    if (position < this.#base) return undefined;
    return this.#records[this.#head + position - this.#base];
  }

  /** Copies of every held record (for `keep`). */
  peekAll(): JobRecord[] {
    return this.#records.slice(this.#head);
  }

  #compact(): void {
    if (this.#head > 1024 && this.#head * 2 > this.#records.length) {
      this.#records = this.#records.slice(this.#head);
      this.#sizes = this.#sizes.slice(this.#head);
      this.#head = 0;
    }
  }
}

/** A rough weight for flow control when the job type gives none. */
export function estimateSize(data: unknown): number {
  const overhead = 48;
  if (typeof data === 'string') return overhead + data.length;
  if (data instanceof Uint8Array) return overhead + data.byteLength;
  if (data === null || typeof data !== 'object') return overhead;
  return overhead * 4;
}
