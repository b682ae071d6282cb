/** Default cap on one record's length; see {@link LineSplitter}. */
export const DEFAULT_MAX_LINE_CHARS = 1024 * 1024;

/**
 * Turns decoded text chunks into lines: split on `\n`, a trailing `\r` stripped, the last partial
 * line flushed by {@link LineSplitter.end}.
 *
 * UTF-8 decoding happens before this (the stream's own `setEncoding`, which keeps a multi-byte
 * character split across chunks intact), so this only sees whole characters.
 *
 * A line longer than `maxLineChars` is emitted in pieces of that length rather than held whole:
 * a process that prints megabytes with no newline must not grow the owner's memory without bound,
 * and a piece still arrives in order, so a receiver can join pieces if it wants the line.
 */
export class LineSplitter {
  #partial = '';
  readonly #onLine: (line: string) => void;
  readonly #maxLineChars: number;

  constructor(onLine: (line: string) => void, maxLineChars = DEFAULT_MAX_LINE_CHARS) {
    this.#onLine = onLine;
    this.#maxLineChars = Math.max(2, maxLineChars);
  }

  write(chunk: string): void {
    let start = 0;
    let nl = chunk.indexOf('\n');
    if (nl !== -1 && this.#partial !== '') {
      const head = this.#partial + chunk.slice(0, nl);
      this.#partial = '';
      this.#line(head);
      start = nl + 1;
      nl = chunk.indexOf('\n', start);
    }
    while (nl !== -1) {
      this.#line(chunk.slice(start, nl));
      start = nl + 1;
      nl = chunk.indexOf('\n', start);
    }
    if (start < chunk.length) {
      this.#partial = this.#partial === '' ? chunk.slice(start) : this.#partial + chunk.slice(start);
      if (this.#partial.length > this.#maxLineChars) this.#partial = this.#pieces(this.#partial, true);
    }
  }

  /** Flushes a final line that had no newline. */
  end(): void {
    if (this.#partial !== '') {
      const rest = this.#partial;
      this.#partial = '';
      this.#line(rest);
    }
  }

  #line(line: string): void {
    // CRLF output (Windows tools, some CLIs) should read the same as LF output.
    if (line.charCodeAt(line.length - 1) === 13) line = line.slice(0, -1);
    if (line.length > this.#maxLineChars) line = this.#pieces(line);
    this.#onLine(line);
  }

  // Emits full-size pieces while more than one piece's worth is left; returns the remainder. For
  // an unfinished line (`open`), the remainder is never empty, so a piece never ends a line, and a
  // trailing `\r` stays with it in case the next chunk starts with `\n`.
  #pieces(text: string, open = false): string {
    const keep =
      open && text.charCodeAt(text.length - 1) === 13 ? this.#maxLineChars + 1 : this.#maxLineChars;
    while (text.length > keep) {
      let cut = this.#maxLineChars;
      // Never cut between the halves of a surrogate pair.
      const code = text.charCodeAt(cut - 1);
      if (code >= 0xd800 && code <= 0xdbff) cut -= 1;
      this.#onLine(text.slice(0, cut));
      text = text.slice(cut);
    }
    return text;
  }
}
