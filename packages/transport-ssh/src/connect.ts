import type { Duplex } from 'node:stream';
import { Client, type ConnectConfig } from 'ssh2';
import { RjobError } from '@rjob/core';
import {
  createAuthPlan,
  DEFAULT_MAX_PROMPT_TRIES,
  type SshAuthShared,
  type SshIdentity,
  type SshPrompter,
  type SshPromptRequest,
  untilAborted,
} from './auth.js';
import { toSshConnectError } from './errors.js';
import { type CheckHostKeyOptions, checkHostKey, type HostKeyDecision } from './known-hosts.js';

export interface ConnectSshOptions
  extends Omit<CheckHostKeyOptions, 'host' | 'port' | 'keyBlob' | 'keyType'> {
  host: string;
  /** Default 22. */
  port?: number;
  username: string;
  /** Private key contents (PEM or OpenSSH format); offered before `identities`. */
  privateKey?: Buffer | string;
  /** Passphrase for `privateKey`. */
  passphrase?: string;
  /** More private keys, offered in order after ssh-agent (identity files as ssh tries them). */
  identities?: SshIdentity[];
  /** ssh-agent socket. Default none (the session layer will default to `SSH_AUTH_SOCK`). */
  agent?: string;
  /**
   * Asks for passphrases, passwords and keyboard-interactive answers (and, without `confirm`,
   * about an unknown host key). Without one, an encrypted key is skipped and password and
   * keyboard-interactive are never tried. When the connection fails while a question is open, the
   * question's signal is aborted and the attempt rejects at once, answered or not.
   */
  prompter?: SshPrompter;
  /** Answers each secret gets before its method is given up. Default 3 (NumberOfPasswordPrompts). */
  maxPromptTries?: number;
  /** Question queue and unlocked keys shared by a transport's connections. */
  authShared?: SshAuthShared;
  /**
   * TCP connect plus handshake and authentication, in milliseconds, not counting the time a
   * question waits for its answer. Default 20 000 (ssh2's own default).
   */
  connectTimeoutMs?: number;
  /** Keepalive interval in milliseconds; 0 turns it off. Default 15 000. */
  keepaliveIntervalMs?: number;
  /** An already open stream to the server (a jump host's channel) instead of a TCP connection. */
  sock?: Duplex;
}

export interface SshConnection {
  client: Client;
  /** How the host key was judged (and any known_hosts line written for it). */
  hostKey: HostKeyDecision;
}

/**
 * Opens an authenticated ssh2 connection whose host key has passed {@link checkHostKey}. ssh2
 * itself accepts any host key unless given a verifier; this always installs one. Rejects with a
 * coded RjobError: host-key refusal, refused connection, DNS, timeout or authentication failure.
 * A failure while a question is open withdraws it (its `signal` aborts, with the error as reason),
 * drops this connection's questions still queued in `authShared`, and names it in the error.
 */
export function connectSsh(options: ConnectSshOptions): Promise<SshConnection> {
  const port = options.port ?? 22;
  const client = new Client();
  const timeoutMs = options.connectTimeoutMs ?? 20_000;
  return new Promise((resolve, reject) => {
    let hostKeyError: RjobError | undefined;
    let decision: HostKeyDecision | undefined;
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    let questionsOpen = 0;
    /** The kinds of the questions open now, for the error if the connection fails meanwhile. */
    const openKinds: string[] = [];
    /** Aborted (with the coded error) when the attempt fails: withdraws and drops its questions. */
    const withdraw = new AbortController();
    const { signal } = withdraw;
    const stopTimer = (): void => {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
    };
    const startTimer = (): void => {
      stopTimer();
      if (settled || timeoutMs <= 0 || questionsOpen > 0) return;
      timer = setTimeout(() => {
        fail(Object.assign(new Error('Timed out while waiting for handshake'), { level: 'client-timeout' }));
        client.destroy();
      }, timeoutMs);
    };
    /**
     * The timeout stands still while a question waits for the user, and starts afresh after.
     * `kind`, when given, is the question now shown to the user (not one waiting its turn).
     */
    const asking = async <T>(
      fn: () => Promise<T>,
      kind?: SshPromptRequest['kind'] | 'host key',
    ): Promise<T> => {
      questionsOpen++;
      if (kind !== undefined) openKinds.push(kind);
      stopTimer();
      try {
        return await fn();
      } finally {
        questionsOpen--;
        if (kind !== undefined) openKinds.splice(openKinds.indexOf(kind), 1);
        startTimer();
      }
    };
    const identities: SshIdentity[] = [];
    if (options.privateKey !== undefined) {
      identities.push({
        key: options.privateKey,
        ...(options.passphrase !== undefined ? { passphrase: options.passphrase } : {}),
      });
    }
    identities.push(...(options.identities ?? []));
    const auth = createAuthPlan({
      username: options.username,
      host: options.host,
      port,
      identities,
      maxPromptTries: options.maxPromptTries ?? DEFAULT_MAX_PROMPT_TRIES,
      asking,
      signal,
      ...(options.agent ? { agent: options.agent } : {}),
      ...(options.prompter ? { prompter: options.prompter } : {}),
      ...(options.authShared ? { shared: options.authShared } : {}),
    });
    const fail = (error: unknown) => {
      const e = (typeof error === 'object' && error !== null ? error : {}) as {
        level?: unknown;
        code?: unknown;
        message?: unknown;
        quiet?: unknown;
      };
      // ssh-agent trouble (no socket, a key it cannot sign with) only skips the agent, as in ssh.
      if (e.level === 'agent') {
        if (e.quiet !== true) auth.note(`ssh-agent: ${String(e.message)}`);
        return;
      }
      if (settled) return;
      settled = true;
      stopTimer();
      client.end();
      let coded = hostKeyError;
      if (coded === undefined && e.level === 'client-authentication') coded = auth.failure(error);
      // The server hanging up mid-authentication (too many failures) is a refused login too.
      if (coded === undefined && auth.started() && typeof e.code === 'number') {
        coded = auth.failure(error, String(e.message));
      }
      coded ??= withOpenQuestion(toSshConnectError(error, { host: options.host, port }), openKinds[0]);
      // Before rejecting: a terminal prompter ends its line before the error is printed.
      withdraw.abort(coded);
      reject(coded);
    };
    // Takes `{ signal }` even when the caller's `confirm` (CheckHostKeyOptions) does not declare it.
    const confirm: SshPrompter['confirm'] =
      options.confirm ?? options.prompter?.confirm?.bind(options.prompter);
    const config: ConnectConfig = {
      host: options.host,
      port,
      username: options.username,
      // Our own timer (above) replaces ssh2's, so that it can wait for the user.
      readyTimeout: 0,
      keepaliveInterval: options.keepaliveIntervalMs ?? 15_000,
      authHandler: auth.handler,
      hostVerifier: (keyBlob: Buffer, verify: (valid: boolean) => void) => {
        const check: CheckHostKeyOptions = { host: options.host, port, keyBlob };
        // Only the host-key fields: the key material and passphrase have no business there.
        if (options.strictHostKeyChecking !== undefined)
          check.strictHostKeyChecking = options.strictHostKeyChecking;
        if (options.userKnownHostsFiles !== undefined)
          check.userKnownHostsFiles = options.userKnownHostsFiles;
        if (options.globalKnownHostsFiles !== undefined)
          check.globalKnownHostsFiles = options.globalKnownHostsFiles;
        if (options.hashKnownHosts !== undefined) check.hashKnownHosts = options.hashKnownHosts;
        if (confirm !== undefined) {
          const shared = options.authShared;
          const open = (question: string) =>
            asking(() => untilAborted(() => confirm(question, { signal }), signal), 'host key');
          // The timer stands still while the question waits its turn too (as it always has here).
          check.confirm = (question) =>
            asking(() =>
              untilAborted(
                () => (shared ? shared.serialize(() => open(question), signal) : open(question)),
                signal,
              ),
            );
        }
        checkHostKey(check).then(
          (d) => {
            if (signal.aborted) return;
            decision = d;
            verify(true);
          },
          (error: unknown) => {
            // The connection failed while its host key was asked about: it reports its own error.
            if (signal.aborted) return;
            hostKeyError = toSshConnectError(error, { host: options.host, port });
            verify(false);
          },
        );
      },
    };
    if (options.sock !== undefined) config.sock = options.sock;
    client.once('ready', () => {
      if (settled) return;
      settled = true;
      stopTimer();
      client.removeListener('error', fail);
      // Later errors (a dropped link) are the session layer's business; keep them from crashing.
      client.on('error', () => {});
      // Requests are small frames answered by small frames: Nagle would hold a frame's second
      // segment for the peer's delayed ACK (40 ms on Linux) on every round trip.
      client.setNoDelay(true);
      // The verifier always runs before 'ready', so a decision exists here.
      resolve({ client, hostKey: decision! });
    });
    client.on('error', fail);
    client.once('close', () => fail(new Error('connection closed during handshake')));
    startTimer();
    client.connect(config);
  });
}

/**
 * The error of a connection that failed while a question was open, saying so: the user saw the
 * question and should learn why it went away. Same code, same details plus `withdrawnQuestion`.
 */
function withOpenQuestion(error: RjobError, kind: string | undefined): RjobError {
  if (kind === undefined) return error;
  return new RjobError(error.code, `${error.message} (while the ${kind} question was open)`, {
    cause: error.cause,
    details: { ...error.details, withdrawnQuestion: kind },
    ...(error.timedOut !== undefined ? { timedOut: error.timedOut } : {}),
  });
}

/** Runs one command on an open connection and collects its output (for tests and probes). */
export function execOnce(
  client: Client,
  command: string,
): Promise<{ stdout: string; stderr: string; exitCode: number | null; signal: string | undefined }> {
  return new Promise((resolve, reject) => {
    client.exec(command, (error, channel) => {
      if (error) return reject(error);
      let stdout = '';
      let stderr = '';
      let exitCode: number | null = null;
      let signal: string | undefined;
      channel.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
      channel.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
      channel.on('exit', (code: number | null, sig?: string) => {
        exitCode = code;
        signal = sig;
      });
      channel.on('close', () => resolve({ stdout, stderr, exitCode, signal }));
    });
  });
}
