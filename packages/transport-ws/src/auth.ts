/**
 * Bearer tokens of the WebSocket listener, each mapped to an identity. Compared in constant time:
 * every candidate is hashed (SHA-256) and the equal-length digests go through timingSafeEqual.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, ProtocolErrorCode, RjobError } from '@rjob/core';

/** The token file generated in the agent's state directory on first start. */
export const DEFAULT_TOKEN_FILE = 'ws-token';

export interface WsAuthOptions {
  /** The agent's state directory: `<stateDir>/ws-token` (0600) is created when no token source is given. */
  stateDir: string;
  /** `{ token: identity }`. */
  tokens?: Record<string, string>;
  /** JSON file `{ "token": "identity", ... }`. */
  tokensFile?: string;
  /** Identity of the generated token. Default: the agent's user name. */
  identity?: string;
}

export interface WsAuth {
  /** The generated token file, when one is in use. */
  readonly tokenFile?: string;
  /** The identity a token maps to, or undefined. Constant time in the token's content. */
  identify(token: string | undefined): string | undefined;
  /**
   * For `new AgentServer({ authenticate })`: maps the `hello` token to its identity, throwing
   * ERR_UNAUTHORIZED otherwise. The listener puts the token checked at the upgrade in `hello`, so
   * a session belongs to the identity of the upgrade's token.
   */
  authenticate(token: string | undefined): string;
}

const digest = (value: string): Buffer => createHash('sha256').update(value, 'utf8').digest();

/** Loads (or, on first start, generates) the tokens the listener accepts. */
export async function createWsAuth(options: WsAuthOptions): Promise<WsAuth> {
  let entries: [string, string][];
  let tokenFile: string | undefined;
  if (options.tokens) {
    entries = Object.entries(options.tokens);
  } else if (options.tokensFile) {
    const parsed: unknown = JSON.parse(await readFile(options.tokensFile, 'utf8'));
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new RjobError(
        ErrorCode.InvalidArgument,
        `${options.tokensFile}: expected {"token": "identity"}.`,
      );
    }
    entries = Object.entries(parsed as Record<string, unknown>).map(([t, id]) => [t, String(id)]);
  } else {
    tokenFile = join(options.stateDir, DEFAULT_TOKEN_FILE);
    entries = [[await readOrCreateToken(tokenFile), options.identity ?? userInfo().username]];
  }
  for (const [token, identity] of entries) {
    if (token.length < 16 || identity.length === 0) {
      throw new RjobError(ErrorCode.InvalidArgument, 'Tokens need at least 16 characters and an identity.');
    }
  }
  const table = entries.map(([token, identity]) => ({ digest: digest(token), identity }));
  const identify = (token: string | undefined): string | undefined => {
    if (typeof token !== 'string' || token.length === 0) return undefined;
    const candidate = digest(token);
    let found: string | undefined;
    // Visit every entry so the time does not depend on which one matches.
    for (const entry of table) if (timingSafeEqual(candidate, entry.digest)) found ??= entry.identity;
    return found;
  };
  return {
    ...(tokenFile === undefined ? {} : { tokenFile }),
    identify,
    authenticate(token) {
      const identity = identify(token);
      if (identity === undefined) throw new RjobError(ProtocolErrorCode.Unauthorized, 'Identity refused.');
      return identity;
    },
  };
}

/**
 * The token in `file`, or a new one (32 random bytes, base64url) written there with mode 0600 on
 * first use. Two starts racing on a missing file agree on the one written first.
 */
export async function readOrCreateToken(file: string): Promise<string> {
  const existing = await readFile(file, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  });
  if (existing !== undefined) return existing.trim();
  const token = randomBytes(32).toString('base64url');
  try {
    await writeFile(file, `${token}\n`, { mode: 0o600, flag: 'wx' });
  } catch (error) {
    // Another agent start won the race: use its token.
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return (await readFile(file, 'utf8')).trim();
    throw error;
  }
  await chmod(file, 0o600);
  return token;
}
