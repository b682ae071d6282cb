import { readFile } from 'node:fs/promises';

/**
 * Parsed files by path, reused while a file's size and mtime stay the same (an edit changes them).
 * A fan-out resolves and verifies every host against the same ssh_config and known_hosts files, so
 * parsing them once per host cost N² lines. The parse is kept as it starts: hosts resolved at the
 * same moment share one read and one parse. A read or parse that failed is not remembered.
 */
export function parsedFileCache<T>(
  parse: (text: string, file: string) => T,
  kept = 64,
): (file: string, info: { mtimeMs: number; size: number }) => Promise<T> {
  const files = new Map<string, { mtimeMs: number; size: number; parsed: Promise<T> }>();
  return (file, info) => {
    const cached = files.get(file);
    if (cached && cached.mtimeMs === info.mtimeMs && cached.size === info.size) return cached.parsed;
    const parsed = readFile(file, 'utf8').then((text) => parse(text, file));
    if (files.size >= kept) files.delete(files.keys().next().value!);
    // Keyed on what the caller stat'ed; a write between that and the read shows up as a new mtime.
    const entry = { mtimeMs: info.mtimeMs, size: info.size, parsed };
    files.set(file, entry);
    parsed.catch(() => {
      if (files.get(file) === entry) files.delete(file);
    });
    return parsed;
  };
}
