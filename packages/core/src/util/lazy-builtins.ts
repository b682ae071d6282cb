/**
 * Node built-ins that cost start-up time to load and are needed only on some paths: fetched on
 * first use (`process.getBuiltinModule`, no ESM facade) rather than imported, so a client that
 * never needs them (`rjob get`) does not load them. node:crypto alone is a few milliseconds of
 * every CLI start (docs/decisions.md, "CLI start-up: where the time goes").
 */
import type * as Crypto from 'node:crypto';
import type * as Zlib from 'node:zlib';

let crypto: typeof Crypto | undefined;
let zlib: typeof Zlib | undefined;

/** `crypto.randomUUID()`, node:crypto loaded on the first call. */
export function randomUUID(): string {
  crypto ??= process.getBuiltinModule('node:crypto');
  return crypto.randomUUID();
}

/** `zlib.crc32(data)`, node:zlib loaded on the first call. */
export function crc32(data: Uint8Array): number {
  zlib ??= process.getBuiltinModule('node:zlib');
  return zlib.crc32(data);
}
