/**
 * The entries appended last, kept in memory so a reader that keeps up with the writer (the usual
 * case: a client attached and reading) gets them without reading them back from disk.
 */
import { HEADER_BYTES } from './segment-format.js';
import type { PackedRecords } from './spool-types.js';

/** Payload bytes of recent records kept in memory for readers that keep up. */
const TAIL_CACHE_BYTES = 4 * 1024 * 1024;

/**
 * The tail cache of one spool: the entries appended last, as written (headers included).
 * Contiguous from `firstSeq`; bounded by {@link TAIL_CACHE_BYTES} of payload.
 */
export class TailCache {
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
   * Entries from `start` out of the cache, within the limits and only as far as written (up to
   * `writtenSeq`: a record a reader has seen must survive a SIGKILL); undefined when `start` is
   * not in it.
   */
  read(start: number, maxRecords: number, maxBytes: number, writtenSeq: number): PackedRecords | undefined {
    const first = this.#firstSeq;
    const end = Math.min(first + this.#entries.length - this.#head, writtenSeq + 1);
    if (start < first || start >= end) return undefined;
    let count = 0;
    let bytes = 0;
    let payloadBytes = 0;
    // Entries of one appendMany lie back to back in one buffer: while they do, the batch is a view
    // of it, not a copy.
    let adjacent = true;
    let previous: Buffer | undefined;
    for (let seq = start; seq < end && count < maxRecords; seq++) {
      const index = this.#head + (seq - first);
      const size = this.#sizes[index]!;
      if (count > 0 && payloadBytes + size > maxBytes) break;
      const entry = this.#entries[index]!;
      if (
        previous !== undefined &&
        (entry.buffer !== previous.buffer || previous.byteOffset + previous.length !== entry.byteOffset)
      ) {
        adjacent = false;
      }
      previous = entry;
      count++;
      bytes += entry.length;
      payloadBytes += size;
    }
    const firstEntry = this.#entries[this.#head + (start - first)]!;
    const out = adjacent
      ? Buffer.from(firstEntry.buffer, firstEntry.byteOffset, bytes)
      : Buffer.concat(
          this.#entries.slice(this.#head + (start - first), this.#head + (start - first) + count),
          bytes,
        );
    return { bytes: out, count, firstSeq: start, lastSeq: start + count - 1 };
  }

  /** Takes the entry (header included) just appended as `seq`. */
  remember(entry: Buffer, seq: number): void {
    const payloadBytes = entry.length - HEADER_BYTES;
    const cacheable = payloadBytes <= TAIL_CACHE_BYTES;
    if (!cacheable || seq !== this.#firstSeq + this.#entries.length - this.#head) {
      // Too large, or the run was broken: a new run starts with this entry or after it.
      this.#entries = [];
      this.#sizes = [];
      this.#head = 0;
      this.#bytes = 0;
      this.#firstSeq = cacheable ? seq : seq + 1;
      if (!cacheable) return;
    }
    this.#entries.push(entry);
    this.#sizes.push(payloadBytes);
    this.#bytes += payloadBytes;
    while (this.#bytes > TAIL_CACHE_BYTES) this.#dropHead();
  }

  /** Drops the entries up to `seq` (acknowledged, or deleted with their segment). */
  forgetUpTo(seq: number): void {
    while (this.#head < this.#entries.length && this.#firstSeq <= seq) this.#dropHead();
  }

  #dropHead(): void {
    this.#bytes -= this.#sizes[this.#head]!;
    this.#entries[this.#head] = undefined as unknown as Buffer;
    this.#head++;
    this.#firstSeq++;
    if (this.#head > 1024 && this.#head * 2 > this.#entries.length) {
      this.#entries = this.#entries.slice(this.#head);
      this.#sizes = this.#sizes.slice(this.#head);
      this.#head = 0;
    }
  }
}
