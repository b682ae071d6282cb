/**
 * The records appended last, kept in memory so a reader that keeps up with the writer (the usual
 * case: a client attached and reading) gets them without reading and decoding them back from
 * disk.
 */
import type { JobRecord } from '@rjob/core';
import { HEADER_BYTES, isCompactPayload } from './segment-format.js';
import type { PackedRecords } from './spool-types.js';

/** Payload bytes of recent records kept in memory for readers that keep up. */
const TAIL_CACHE_BYTES = 4 * 1024 * 1024;

/**
 * The tail cache of one spool: the records appended last, as objects, and their entries as
 * written (for packed reads). Contiguous from `firstSeq`; bounded by {@link TAIL_CACHE_BYTES} of
 * payload; only records whose compact form (text or bytes) round-trips exactly (see
 * segment-format.ts) go in.
 */
export class TailCache {
  #records: JobRecord[] = [];
  #entries: Buffer[] = [];
  #sizes: number[] = [];
  #head = 0;
  #firstSeq = 1;
  #bytes = 0;

  /** An empty cache whose run starts with record `seq` (a spool just recovered). */
  startAt(seq: number): void {
    this.#firstSeq = seq;
  }

  /**
   * Records from `start` out of the cache, within the limits and only as far as written (up to
   * `writtenSeq`: a record a reader has seen must survive a SIGKILL); undefined when `start` is
   * not in it.
   */
  read(start: number, maxRecords: number, maxBytes: number, writtenSeq: number): JobRecord[] | undefined {
    const first = this.#firstSeq;
    const end = Math.min(first + this.#records.length - this.#head, writtenSeq + 1);
    if (start < first || start >= end) return undefined;
    const out: JobRecord[] = [];
    let bytes = 0;
    for (let seq = start; seq < end && out.length < maxRecords; seq++) {
      const index = this.#head + (seq - first);
      const size = this.#sizes[index]!;
      if (out.length > 0 && bytes + size > maxBytes) break;
      const record = this.#records[index]!;
      // Each reader gets its own bytes, as decoding the entry would give it.
      out.push(Buffer.isBuffer(record.data) ? { ...record, data: Buffer.from(record.data) } : record);
      bytes += size;
    }
    return out;
  }

  /** Takes the record just appended as `seq`, with its entry (header included). */
  remember(record: JobRecord, entry: Buffer, seq: number): void {
    // Read in place: a view of the payload per record would only feed the garbage collector.
    const payloadBytes = entry.length - HEADER_BYTES;
    const cacheable = payloadBytes <= TAIL_CACHE_BYTES && isCompactPayload(entry, HEADER_BYTES);
    if (!cacheable || seq !== this.#firstSeq + this.#records.length - this.#head) {
      // Something else, or the run was broken: a new run starts with this record or after it.
      this.#records = [];
      this.#entries = [];
      this.#sizes = [];
      this.#head = 0;
      this.#bytes = 0;
      this.#firstSeq = cacheable ? seq : seq + 1;
      if (!cacheable) return;
    }
    // A copy with the spool's numbering, exactly what decoding the entry would give.
    this.#records.push({
      stream: record.stream,
      data: record.data,
      seq,
      timeMs: record.timeMs,
      jobId: record.jobId,
      location: record.location,
    });
    this.#entries.push(entry);
    this.#sizes.push(payloadBytes);
    this.#bytes += payloadBytes;
    while (this.#bytes > TAIL_CACHE_BYTES) this.#dropHead();
  }

  /** Drops the records up to `seq` (acknowledged, or deleted with their segment). */
  forgetUpTo(seq: number): void {
    while (this.#head < this.#records.length && this.#firstSeq <= seq) this.#dropHead();
  }

  #dropHead(): void {
    this.#bytes -= this.#sizes[this.#head]!;
    this.#records[this.#head] = undefined as unknown as JobRecord;
    this.#entries[this.#head] = undefined as unknown as Buffer;
    this.#head++;
    this.#firstSeq++;
    if (this.#head > 1024 && this.#head * 2 > this.#records.length) {
      this.#records = this.#records.slice(this.#head);
      this.#entries = this.#entries.slice(this.#head);
      this.#sizes = this.#sizes.slice(this.#head);
      this.#head = 0;
    }
  }

  /** {@link read} as entries. */
  readPacked(
    start: number,
    maxRecords: number,
    maxBytes: number,
    writtenSeq: number,
  ): PackedRecords | undefined {
    const first = this.#firstSeq;
    const end = Math.min(first + this.#records.length - this.#head, writtenSeq + 1);
    if (start < first || start >= end) return undefined;
    const entries: Buffer[] = [];
    let bytes = 0;
    let payloadBytes = 0;
    for (let seq = start; seq < end && entries.length < maxRecords; seq++) {
      const index = this.#head + (seq - first);
      const size = this.#sizes[index]!;
      if (entries.length > 0 && payloadBytes + size > maxBytes) break;
      const entry = this.#entries[index]!;
      entries.push(entry);
      bytes += entry.length;
      payloadBytes += size;
    }
    return {
      bytes: Buffer.concat(entries, bytes),
      count: entries.length,
      firstSeq: start,
      lastSeq: start + entries.length - 1,
    };
  }
}
