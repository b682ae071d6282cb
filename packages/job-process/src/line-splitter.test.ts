import { describe, expect, it } from 'vitest';
import { LineSplitter } from './line-splitter.js';

function split(chunks: string[], maxLineChars?: number): string[] {
  const lines: string[] = [];
  const splitter = new LineSplitter((line) => lines.push(line), maxLineChars);
  for (const chunk of chunks) splitter.write(chunk);
  splitter.end();
  return lines;
}

describe('LineSplitter', () => {
  it('splits on \\n across chunks and flushes the last partial line at the end', () => {
    expect(split(['a\nb', 'c\n', '', 'd\n\ne'])).toEqual(['a', 'bc', 'd', '', 'e']);
    expect(split(['x\n'])).toEqual(['x']);
    expect(split([])).toEqual([]);
  });

  it('strips a \\r before \\n, even when the two arrive in different chunks', () => {
    expect(split(['a\r\nb\r', '\nc\r'])).toEqual(['a', 'b', 'c']);
    expect(split(['mid\rline\n'])).toEqual(['mid\rline']);
  });

  it('cuts a long line into pieces of maxLineChars, in order', () => {
    expect(split(['abcdefg\n'], 3)).toEqual(['abc', 'def', 'g']);
    expect(split(['ab', 'cd', 'ef', 'g'], 3)).toEqual(['abc', 'def', 'g']);
    expect(split(['abcdef\n'], 3)).toEqual(['abc', 'def']);
    expect(split(['abc\r', '\n'], 3)).toEqual(['abc']);
  });

  it('never cuts a surrogate pair in two', () => {
    const lines = split(['ab😀cd\n'], 3);
    expect(lines.join('')).toBe('ab😀cd');
    for (const line of lines) expect(line).not.toMatch(/[\ud800-\udbff]$/);
  });
});
