/**
 * Private keys for client authentication: parsing them, telling an encrypted one, reading the
 * public half of one without its passphrase, and the in-process agent that asks for that
 * passphrase only when the server would accept the key.
 */
import { readFile } from 'node:fs/promises';
import ssh2, { BaseAgent, type ParsedKey } from 'ssh2';
import { keyTypeOfBlob } from './known-hosts.js';

/** ssh2's error for an encrypted key parsed without (the right) passphrase. */
export const ENCRYPTED_KEY = /no passphrase given/i;
// Through the default export: Node cannot see `utils` among ssh2's CommonJS named exports.
const { utils } = ssh2;

/** ssh2's key parser, with an array (several keys in one file) reduced to its first key. */
export function parseKey(key: Buffer | string | ParsedKey, passphrase?: string): ParsedKey | Error {
  const parsed = utils.parseKey(key, passphrase) as ParsedKey | ParsedKey[] | Error;
  return Array.isArray(parsed) ? (parsed[0] ?? new Error('no key in file')) : parsed;
}

/** True when the key is encrypted and no (or no right) passphrase was given. */
export function isEncryptedKey(key: Buffer | string): boolean {
  const parsed = parseKey(key);
  return parsed instanceof Error && ENCRYPTED_KEY.test(parsed.message);
}

/**
 * The public half of an encrypted identity without its passphrase: an `openssh-key-v1` file
 * carries it in clear; for other formats, `<file>.pub` when it exists.
 */
export async function publicKeyOf(identity: {
  key: Buffer | string;
  file?: string;
}): Promise<ParsedKey | undefined> {
  const text = typeof identity.key === 'string' ? identity.key : identity.key.toString('utf8');
  const armored = /-----BEGIN OPENSSH PRIVATE KEY-----([\s\S]+?)-----END OPENSSH PRIVATE KEY-----/.exec(text);
  if (armored) {
    const blob = Buffer.from(armored[1]!.replace(/\s+/g, ''), 'base64');
    const magic = Buffer.from('openssh-key-v1\0', 'latin1');
    if (blob.subarray(0, magic.length).equals(magic)) {
      let at = magic.length;
      const str = (): Buffer | undefined => {
        if (at + 4 > blob.length) return undefined;
        const length = blob.readUInt32BE(at);
        if (at + 4 + length > blob.length) return undefined;
        const out = blob.subarray(at + 4, at + 4 + length);
        at += 4 + length;
        return out;
      };
      // cipher name, kdf name, kdf options, then the key count and the first public key.
      if (str() && str() && str() && at + 4 <= blob.length) {
        at += 4;
        const pub = str();
        const type = pub && keyTypeOfBlob(pub);
        if (pub && type) {
          const key = parseKey(`${type} ${pub.toString('base64')}`);
          if (!(key instanceof Error)) return key;
        }
      }
    }
  }
  if (identity.file === undefined) return undefined;
  try {
    const key = parseKey(await readFile(`${identity.file}.pub`));
    return key instanceof Error ? undefined : key;
  } catch {
    return undefined;
  }
}

/**
 * An in-process agent holding one encrypted identity: its public key is offered first, and the
 * passphrase is asked only once the server said it would accept that key (as OpenSSH does).
 */
export class UnlockOnSignAgent extends BaseAgent {
  readonly #publicKey: ParsedKey;
  readonly #unlock: () => Promise<ParsedKey | undefined>;
  readonly #signal: AbortSignal | undefined;

  constructor(publicKey: ParsedKey, unlock: () => Promise<ParsedKey | undefined>, signal?: AbortSignal) {
    super();
    this.#publicKey = publicKey;
    this.#unlock = unlock;
    this.#signal = signal;
  }

  getIdentities(cb: (error: Error | null, keys?: ParsedKey[]) => void): void {
    cb(null, [this.#publicKey]);
  }

  sign(
    _publicKey: unknown,
    data: Buffer,
    options: { hash?: string } | ((error: Error | null, signature?: Buffer) => void),
    cb?: (error: Error | null, signature?: Buffer) => void,
  ): void {
    const done = typeof options === 'function' ? options : cb!;
    const hash = typeof options === 'function' ? undefined : options?.hash;
    this.#unlock().then(
      (key) => {
        // The connection is gone: nothing to sign for.
        if (this.#signal?.aborted) return;
        if (!key) return done(Object.assign(new Error('identity not unlocked'), { quiet: true }));
        const signature = key.sign(data, hash) as Buffer | Error;
        if (signature instanceof Error) done(signature);
        else done(null, signature);
      },
      (error: unknown) => {
        if (this.#signal?.aborted) return;
        done(error instanceof Error ? error : new Error(String(error)));
      },
    );
  }
}
