/**
 * Client authentication: which methods are tried, in which order, and who is asked. The order is
 * OpenSSH's default PreferredAuthentications: publickey (ssh-agent, then each identity), then
 * keyboard-interactive, then password. Secrets are only ever asked through a {@link SshPrompter};
 * without one an encrypted identity is skipped and password / keyboard-interactive are never sent.
 * No secret is kept in an error, its details or a log line.
 */
import { RjobError } from '@rjob/core';
import type {
  AnyAuthMethod,
  AuthHandlerMiddleware,
  BaseAgent,
  KeyboardInteractiveAuthMethod,
  ParsedKey,
  Prompt,
} from 'ssh2';
import { SshErrorCode } from './errors.js';
import { ENCRYPTED_KEY, isEncryptedKey, parseKey, publicKeyOf, UnlockOnSignAgent } from './keys.js';

/** How many answers a secret gets before that method is given up, as OpenSSH's NumberOfPasswordPrompts. */
export const DEFAULT_MAX_PROMPT_TRIES = 3;

/** One question for the person at the terminal. */
export interface SshPromptRequest {
  kind: 'passphrase' | 'password' | 'keyboard-interactive';
  /**
   * The text to show, worded as OpenSSH words it (`Enter passphrase for key '/home/me/.ssh/id_ed25519': `,
   * `deploy@web1's password: `, `(deploy@web1) Password: `), with what came before it on a terminal
   * (`Permission denied, please try again.`, a keyboard-interactive round's name and instructions)
   * on lines of its own. A terminal prompter prints it as it is and reads one line.
   */
  prompt: string;
  /** False for a secret: the answer must not be echoed. */
  echo: boolean;
  user: string;
  host: string;
  port: number;
  /** The identity file whose passphrase is asked (`kind: 'passphrase'`). */
  file?: string;
  /** 1 for the first question of its kind, 2 and 3 after wrong answers. */
  attempt: number;
  /**
   * Aborted when the connection fails while this question is open (the server hung up, the
   * socket failed), with the connection's coded error as its `reason`. A prompter should then withdraw the question (stop reading, give the terminal back)
   * and settle; whatever it settles with is ignored, and the connect attempt does not wait for it.
   * `connectSsh` always sets it; optional so that prompters and their tests may build requests.
   */
  signal?: AbortSignal;
}

/**
 * Asks the user. Calls may come from several connections at once; `sshTransport` queues them so
 * that one question is open at a time, `connectSsh` alone does not. Each call carries an
 * `AbortSignal` that withdraws the question when its connection fails meanwhile; a prompter that
 * ignores it still works, its late answer is dropped.
 */
export interface SshPrompter {
  /**
   * An unknown host key under StrictHostKeyChecking `ask`: OpenSSH's question; true accepts.
   * `options.signal` is as {@link SshPromptRequest.signal}: aborted when the connection fails while
   * the question is open.
   */
  confirm?(question: string, options?: { signal?: AbortSignal }): Promise<boolean>;
  /**
   * A passphrase, password or keyboard-interactive answer. Resolve `undefined` (or an empty
   * passphrase) to give that method up; reject to give it up with the rejection as a note.
   */
  ask?(request: SshPromptRequest): Promise<string | undefined>;
}

/** A private key to offer. */
export interface SshIdentity {
  /** The key file's contents (OpenSSH, PEM or PPK format). */
  key: Buffer | string;
  /** Where it came from, for prompts and errors. */
  file?: string;
  /** Tried first for an encrypted key; the prompter is asked when it is missing or wrong. */
  passphrase?: string;
}

/**
 * What a transport shares between its connections: one open question at a time, and identities
 * unlocked once (a fan-out to twenty hosts with one encrypted key asks its passphrase once).
 */
export interface SshAuthShared {
  /**
   * Runs `fn` when the previous question has been answered. Once `signal` aborts, the returned
   * promise rejects with its reason at once, `fn` is never started if it had not been, and the
   * next question goes ahead without waiting for `fn` to settle.
   */
  serialize<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T>;
  /** Decrypted keys by file (and contents); kept only for the transport's lifetime. */
  unlocked: Map<string, ParsedKey>;
}

export function createAuthShared(): SshAuthShared {
  let tail: Promise<unknown> = Promise.resolve();
  return {
    serialize<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
      const start = (): Promise<T> => untilAborted(fn, signal);
      const run = tail.then(start, start);
      tail = run.catch(() => {});
      // A question waiting its turn is dropped at once; its place in the queue passes untouched.
      return untilAborted(() => run, signal);
    },
    unlocked: new Map(),
  };
}

/**
 * `fn()`, unless `signal` aborts first: then its reason, at once, and `fn` is not started if the
 * signal had already aborted. A late outcome of `fn` is dropped (a rejection too, unreported).
 */
export function untilAborted<T>(fn: () => Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return fn();
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    let pending: Promise<T>;
    try {
      pending = Promise.resolve(fn());
    } catch (error) {
      pending = Promise.reject(error);
    }
    pending.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

export interface AuthPlanOptions {
  username: string;
  host: string;
  port: number;
  /** ssh-agent socket path (or agent object). */
  agent?: string | BaseAgent;
  identities: SshIdentity[];
  prompter?: SshPrompter;
  maxPromptTries?: number;
  shared?: SshAuthShared;
  /**
   * Wraps every question, and the wait for its turn in the shared queue, so the handshake timeout
   * does not run while the user types or answers another host; `kind` (given once the question is
   * shown) says which question is open, for the error if the connection fails meanwhile.
   */
  asking<T>(fn: () => Promise<T>, kind?: SshPromptRequest['kind']): Promise<T>;
  /**
   * Aborted when the connection fails: open questions are withdrawn (the prompter gets the signal),
   * queued ones dropped, and nothing more is sent on the connection.
   */
  signal?: AbortSignal;
}

export interface AuthPlan {
  /** For ssh2's `authHandler`. */
  handler: AuthHandlerMiddleware;
  /** True once the first method was sent: a disconnect from now on is an authentication failure. */
  started(): boolean;
  /** The coded, permanent failure to report; `serverMessage` is a disconnect reason, if any. */
  failure(cause?: unknown, serverMessage?: string): RjobError;
  /** Errors ssh2 reports without ending the handshake (agent failures); noted, not fatal. */
  note(message: string): void;
}

type Stage =
  | { kind: 'none' }
  | { kind: 'agent'; agent: string | BaseAgent }
  | { kind: 'identity'; identity: SshIdentity }
  | { kind: 'keyboard-interactive' }
  | { kind: 'password' };

/** Builds the method sequence for one connection attempt. */
export function createAuthPlan(options: AuthPlanOptions): AuthPlan {
  const { username, host, port, prompter, signal } = options;
  const maxTries = options.maxPromptTries ?? DEFAULT_MAX_PROMPT_TRIES;
  const ask = prompter?.ask?.bind(prompter);
  const stages: Stage[] = [{ kind: 'none' }];
  if (options.agent !== undefined) stages.push({ kind: 'agent', agent: options.agent });
  for (const identity of options.identities) stages.push({ kind: 'identity', identity });
  stages.push({ kind: 'keyboard-interactive' }, { kind: 'password' });

  let stage = 0;
  let started = false;
  let offered: string[] | undefined;
  let kbdTries = 0;
  let kbdGaveUp = false;
  let passwordTries = 0;
  const notes: string[] = [];
  const note = (message: string): void => {
    if (!notes.includes(message)) notes.push(message);
  };
  const who = `${username}@${host}`;
  const base = { user: username, host, port, ...(signal ? { signal } : {}) };
  const aborted = (): boolean => signal?.aborted === true;

  /**
   * Runs `fn` when the shared queue gets to it. The handshake timer stands still while this
   * connection waits its turn (another host's question may take the user a while), as it does
   * for the host-key question; a server that gives up meanwhile fails the connection, and the
   * signal drops the queued question.
   */
  const inTurn = <T>(fn: () => Promise<T>): Promise<T> =>
    options.shared ? options.asking(() => options.shared!.serialize(fn, signal)) : fn();

  /**
   * Asks through the queue and with the handshake timer paused; a thrown prompt becomes a note.
   * Once the connection has failed it throws the signal's reason instead: nothing more is tried.
   */
  const question = async (request: SshPromptRequest): Promise<string | undefined> => {
    if (!ask) return undefined;
    const run = () => options.asking(() => untilAborted(() => ask(request), signal), request.kind);
    try {
      // Also around the queue: a custom `serialize` may not know about the signal.
      return await untilAborted(() => inTurn(run), signal);
    } catch (error) {
      if (aborted()) throw error;
      note(`${request.kind} prompt failed: ${error instanceof Error ? error.message : String(error)}`);
      return undefined;
    }
  };

  const cacheKey = (identity: SshIdentity): string =>
    `${identity.file ?? ''}\0${typeof identity.key === 'string' ? identity.key : identity.key.toString('base64')}`;

  /** Decrypts an identity: its given passphrase, then up to `maxTries` answers. */
  const unlock = async (identity: SshIdentity, label: string): Promise<ParsedKey | undefined> => {
    const cached = options.shared?.unlocked.get(cacheKey(identity));
    if (cached) return cached;
    const attempt = async (): Promise<ParsedKey | undefined> => {
      // Another connection may have unlocked it while this one waited for its turn.
      const again = options.shared?.unlocked.get(cacheKey(identity));
      if (again) return again;
      for (let tries = 1; tries <= maxTries; tries++) {
        const prompt =
          tries === 1
            ? `Enter passphrase for key '${label}': `
            : `Bad passphrase, try again for key '${label}': `;
        const request: SshPromptRequest = {
          ...base,
          kind: 'passphrase',
          prompt,
          echo: false,
          attempt: tries,
        };
        if (identity.file !== undefined) request.file = identity.file;
        const answer = await options.asking(() => untilAborted(() => ask!(request), signal), 'passphrase');
        if (answer === undefined || answer === '') {
          note(`no passphrase given for key ${label}`);
          return undefined;
        }
        const key = parseKey(identity.key, answer);
        if (!(key instanceof Error) && key.isPrivateKey()) {
          options.shared?.unlocked.set(cacheKey(identity), key);
          return key;
        }
      }
      note(`${maxTries} wrong passphrases for key ${label}`);
      return undefined;
    };
    try {
      return await untilAborted(() => inTurn(attempt), signal);
    } catch (error) {
      if (aborted()) throw error;
      note(`passphrase prompt failed: ${error instanceof Error ? error.message : String(error)}`);
      return undefined;
    }
  };

  const identityAttempt = async (identity: SshIdentity): Promise<AnyAuthMethod | undefined> => {
    const label = identity.file ?? 'the given private key';
    const plain = parseKey(identity.key, identity.passphrase);
    if (!(plain instanceof Error)) {
      if (!plain.isPrivateKey()) {
        note(`${label} is not a private key`);
        return undefined;
      }
      return { type: 'publickey', username, key: plain };
    }
    const encrypted =
      ENCRYPTED_KEY.test(plain.message) ||
      (identity.passphrase !== undefined && isEncryptedKey(identity.key));
    if (!encrypted) {
      note(`${label} is not a usable private key (${plain.message})`);
      return undefined;
    }
    if (!ask) {
      note(`key ${label} is encrypted and there is no terminal to ask for its passphrase`);
      return undefined;
    }
    const publicKey = await publicKeyOf(identity);
    if (publicKey) {
      return {
        type: 'agent',
        username,
        agent: new UnlockOnSignAgent(publicKey, () => unlock(identity, label), signal),
      };
    }
    const key = await unlock(identity, label);
    return key ? { type: 'publickey', username, key } : undefined;
  };

  const keyboardInteractive: KeyboardInteractiveAuthMethod['prompt'] = (
    name,
    instructions,
    _lang,
    prompts: Prompt[],
    finish,
  ) => {
    void (async () => {
      // Nothing is answered on a connection that failed while asking.
      if (aborted()) return;
      const answers: string[] = [];
      for (const [index, p] of prompts.entries()) {
        const lines: string[] = [];
        if (index === 0) {
          if (kbdTries > 1) lines.push('Permission denied, please try again.');
          if (name) lines.push(name);
          if (instructions) lines.push(instructions.replace(/\n$/, ''));
        }
        lines.push(`(${who}) ${p.prompt}`);
        const answer = await question({
          ...base,
          kind: 'keyboard-interactive',
          prompt: lines.join('\n'),
          echo: p.echo === true,
          attempt: kbdTries,
        });
        if (answer === undefined) {
          kbdGaveUp = true;
          note('no keyboard-interactive answer given');
          break;
        }
        answers.push(answer);
      }
      // A round cannot be cancelled: a given-up round answers empty, and is not asked again.
      finish(answers.length === prompts.length ? answers : prompts.map(() => ''));
    })().catch(() => {
      // Only the signal's reason gets here: the connection is gone and reports its own error.
    });
  };

  const next = async (methodsLeft: string[] | null): Promise<AnyAuthMethod | false> => {
    if (methodsLeft) offered = methodsLeft;
    const allowed = (method: string): boolean => methodsLeft === null || methodsLeft.includes(method);
    while (stage < stages.length) {
      const current = stages[stage]!;
      switch (current.kind) {
        case 'none':
          stage++;
          return { type: 'none', username };
        case 'agent':
          stage++;
          if (!allowed('publickey')) continue;
          return { type: 'agent', username, agent: current.agent };
        case 'identity': {
          stage++;
          if (!allowed('publickey')) continue;
          const method = await identityAttempt(current.identity);
          if (method) return method;
          continue;
        }
        case 'keyboard-interactive':
          if (!allowed('keyboard-interactive') || kbdGaveUp || kbdTries >= maxTries) {
            stage++;
            continue;
          }
          if (!ask) {
            note('keyboard-interactive not tried: no terminal to ask on');
            stage++;
            continue;
          }
          kbdTries++;
          return { type: 'keyboard-interactive', username, prompt: keyboardInteractive };
        case 'password': {
          if (!allowed('password') || passwordTries >= maxTries) {
            stage++;
            continue;
          }
          if (!ask) {
            note('password not tried: no terminal to ask on');
            stage++;
            continue;
          }
          passwordTries++;
          const prefix = passwordTries > 1 ? 'Permission denied, please try again.\n' : '';
          const password = await question({
            ...base,
            kind: 'password',
            prompt: `${prefix}${who}'s password: `,
            echo: false,
            attempt: passwordTries,
          });
          if (password === undefined) {
            passwordTries--;
            note('no password given');
            stage++;
            continue;
          }
          return { type: 'password', username, password };
        }
      }
    }
    return false;
  };

  const handler: AuthHandlerMiddleware = (methodsLeft, _partialSuccess, callback) => {
    started = true;
    const done = callback as (method: AnyAuthMethod | false) => void;
    next(methodsLeft as string[] | null).then(
      (method) => {
        if (!aborted()) done(method);
      },
      (error: unknown) => {
        // The connection failed while a question was open: nothing more goes to the server.
        if (aborted()) return;
        note(`authentication failed: ${error instanceof Error ? error.message : String(error)}`);
        done(false);
      },
    );
  };

  return {
    handler,
    started: () => started,
    note,
    failure(cause, serverMessage) {
      const methods = offered ?? [];
      const parts = [`ssh: ${host}:${port}: permission denied (${methods.join(',') || 'no method left'})`];
      if (serverMessage) parts.push(`the server closed the connection: ${serverMessage}`);
      const times = (n: number): string => (n === 1 ? 'once' : `${n} times`);
      if (kbdTries > 0 && !kbdGaveUp) note(`keyboard-interactive answers refused ${times(kbdTries)}`);
      if (passwordTries > 0) note(`password refused ${times(passwordTries)}`);
      parts.push(...notes);
      return new RjobError(SshErrorCode.AuthFailed, parts.join('; '), {
        cause,
        // Asking again gives the same answer: the session client stops retrying.
        details: { host, port, permanent: true, methods, notes: [...notes] },
      });
    },
  };
}
