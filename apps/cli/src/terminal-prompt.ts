/**
 * Asking on the terminal, as ssh does: an unknown host key, a key's passphrase, a password or a
 * keyboard-interactive answer. Only when stdin and stderr are both terminals; then the questions
 * go to the controlling terminal (/dev/tty, else stderr) and never to stdout, and secrets are read
 * with echo off. Anywhere else rjob asks nothing and behaves as before (refuses). A question whose
 * connection fails meanwhile (its signal aborts) is withdrawn as ssh withdraws it: the line ends,
 * the terminal gets its echo back, and the error that follows starts on a line of its own.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { ReadStream } from 'node:tty';
import type { SshPrompter } from '@rjob/transport-ssh';
import type { CliIo } from './io.js';

/** True when a person can be asked: stdin and stderr are terminals. */
export function canPrompt(io: CliIo): boolean {
  return io.stdin?.isTTY === true && io.stderr.isTTY === true;
}

interface Terminal {
  input: ReadStream;
  write(text: string): void;
  /** Gives the terminal back: raw mode off, our own /dev/tty handle closed. */
  release(): void;
}

/** The controlling terminal for one question; stdin/stderr when /dev/tty cannot be opened. */
function openTerminal(io: CliIo): Terminal | undefined {
  let fd: number | undefined;
  try {
    fd = openSync('/dev/tty', 'r+');
  } catch {
    fd = undefined;
  }
  let input: ReadStream | undefined;
  if (fd !== undefined) {
    try {
      input = new ReadStream(fd);
    } catch {
      closeSync(fd);
    }
  }
  if (fd !== undefined && input !== undefined) {
    const ttyFd = fd;
    const tty = input;
    return {
      input: tty,
      write: (text) => {
        try {
          // Synchronously, so the prompt is out before the answer is read.
          writeSync(ttyFd, text);
        } catch {
          // The terminal went away; reading ends too.
        }
      },
      release: () => {
        if (tty.destroyed) return;
        tty.setRawMode(false);
        // Closes the fd as well.
        tty.destroy();
      },
    };
  }
  const stdin = io.stdin;
  if (!(stdin instanceof ReadStream)) return undefined;
  return {
    input: stdin,
    write: (text) => io.stderr.write(text),
    release: () => {
      stdin.setRawMode(false);
      stdin.pause();
    },
  };
}

/**
 * Reads one line in raw mode: Enter ends it, Backspace and Ctrl-U edit it, Ctrl-D on an empty line
 * is end of input (undefined), Ctrl-C gives the terminal back and interrupts rjob as it would
 * anywhere else. With `echo` off nothing typed is shown. When `signal` aborts, reading stops, the
 * line is ended and the terminal given back at once (undefined).
 */
function readLine(terminal: Terminal, echo: boolean, signal?: AbortSignal): Promise<string | undefined> {
  const { input } = terminal;
  return new Promise((resolve) => {
    let line = '';
    let inEscape = false;
    const finish = (value: string | undefined): void => {
      input.off('data', onData);
      input.off('end', onEnd);
      signal?.removeEventListener('abort', onAbort);
      resolve(value);
    };
    const onEnd = (): void => finish(undefined);
    // Synchronously, in the abort itself: the caller prints its error right after, and the
    // terminal must by then be back in its own mode with the cursor on a fresh line.
    const onAbort = (): void => {
      terminal.write('\n');
      finish(undefined);
      terminal.release();
    };
    const onData = (chunk: string): void => {
      for (const ch of chunk) {
        if (inEscape) {
          // Skip a key's escape sequence (arrows and the like): ESC [ params final.
          if (ch === '[' || ch === 'O' || /[0-9;]/.test(ch)) continue;
          inEscape = false;
          continue;
        }
        if (ch === '\r' || ch === '\n') {
          terminal.write('\n');
          finish(line);
          return;
        }
        if (ch === '\u0003') {
          terminal.write('^C\n');
          finish(undefined);
          terminal.release();
          process.kill(process.pid, 'SIGINT');
          return;
        }
        if (ch === '\u0004') {
          if (line === '') {
            terminal.write('\n');
            finish(undefined);
            return;
          }
          continue;
        }
        if (ch === '\u007f' || ch === '\b') {
          if (line !== '') {
            line = Array.from(line).slice(0, -1).join('');
            if (echo) terminal.write('\b \b');
          }
          continue;
        }
        if (ch === '\u0015') {
          if (echo) terminal.write('\b \b'.repeat(Array.from(line).length));
          line = '';
          continue;
        }
        if (ch === '\u001b') {
          inEscape = true;
          continue;
        }
        if (ch < ' ') continue;
        line += ch;
        if (echo) terminal.write(ch);
      }
    };
    input.setEncoding('utf8');
    input.on('data', onData);
    input.once('end', onEnd);
    signal?.addEventListener('abort', onAbort, { once: true });
    input.resume();
  });
}

/**
 * Shows `prompt` and reads an answer on the terminal; undefined when there is none to ask on, or
 * when `signal` aborts (before or while asking).
 */
async function ask(
  io: CliIo,
  prompt: string,
  echo: boolean,
  signal?: AbortSignal,
): Promise<string | undefined> {
  if (signal?.aborted) return undefined;
  const terminal = openTerminal(io);
  if (!terminal) return undefined;
  // A prompt reading stdin (`rjob enter`) must not take the keys meant for this question.
  const stdin = io.stdin as Readable | undefined;
  const wasFlowing = stdin !== undefined && stdin !== terminal.input && stdin.readableFlowing === true;
  if (wasFlowing) stdin.pause();
  // rjob may exit while a question is open (the server hung up): never leave the terminal raw.
  const restore = (): void => terminal.release();
  process.once('exit', restore);
  try {
    // Echo off before the prompt shows: nothing typed after it may appear on the screen.
    terminal.input.setRawMode(true);
    terminal.write(prompt);
    return await readLine(terminal, echo, signal);
  } finally {
    process.off('exit', restore);
    terminal.release();
    if (wasFlowing) stdin.resume();
  }
}

/** The fingerprint in ssh's unknown-host question, which may be typed instead of "yes". */
function fingerprintIn(question: string): string | undefined {
  return /fingerprint is (SHA256:[A-Za-z0-9+/]+)/.exec(question)?.[1];
}

/**
 * A prompter for @rjob/transport-ssh that asks on this terminal, or undefined when stdin or stderr
 * is not a terminal (nothing is then asked, as before).
 */
export function terminalPrompter(io: CliIo): SshPrompter | undefined {
  if (!canPrompt(io)) return undefined;
  return {
    async confirm(question, options) {
      const fingerprint = fingerprintIn(question);
      let prompt = `${question.replace(/\(yes\/no\)\?$/, fingerprint ? '(yes/no/[fingerprint])?' : '(yes/no)?')} `;
      for (;;) {
        const answer = await ask(io, prompt, true, options?.signal);
        if (answer === undefined) return false;
        const word = answer.trim();
        if (/^yes$/i.test(word)) return true;
        if (/^no$/i.test(word)) return false;
        if (fingerprint !== undefined && word === fingerprint) return true;
        prompt = fingerprint ? "Please type 'yes', 'no' or the fingerprint: " : "Please type 'yes' or 'no': ";
      }
    },
    ask: (request) => ask(io, request.prompt, request.echo, request.signal),
  };
}
