/**
 * The read handles of a spool's segments: one segment per spool keeps its handle open between
 * reads, so a reader that trails the writer does not open and close the file for every batch.
 */
import { type FileHandle, open } from 'node:fs/promises';
import type { Segment } from './segment.js';

/** The handle cache of one spool: which segment keeps its read handle open now. */
export class ReaderHandles {
  /** The segment whose read handle stays open between reads. */
  #current: Segment | undefined;

  /**
   * The read handle of `segment`, for one read; {@link release} after. One segment per spool
   * keeps its handle open between reads (readers move forward through the segments), so a spool
   * holds at most one extra descriptor beyond the reads running.
   */
  async acquire(segment: Segment): Promise<FileHandle> {
    const previous = this.#current;
    if (previous !== segment) {
      this.#current = segment;
      if (previous) dropReader(previous);
    }
    segment.dropReader = false;
    segment.readers = (segment.readers ?? 0) + 1;
    try {
      return await openReader(segment);
    } catch (error) {
      this.release(segment);
      throw error;
    }
  }

  release(segment: Segment): void {
    segment.readers = (segment.readers ?? 1) - 1;
    if (segment.readers === 0 && segment.dropReader) closeReader(segment);
  }
}

function openReader(segment: Segment): Promise<FileHandle> {
  if (!segment.reader) {
    const opening = open(segment.path, 'r');
    segment.reader = opening;
    opening.catch(() => {
      if (segment.reader === opening) segment.reader = undefined;
    });
  }
  return segment.reader;
}

/** Closes the segment's read handle now, or after the reads running on it. */
export function dropReader(segment: Segment): void {
  segment.dropReader = true;
  if (!segment.readers) closeReader(segment);
}

function closeReader(segment: Segment): void {
  const reader = segment.reader;
  segment.reader = undefined;
  segment.dropReader = false;
  reader?.then((handle) => handle.close()).catch(() => {});
}
