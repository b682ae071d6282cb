/**
 * Resume secrets. The agent keeps only a SHA-256 of each secret, so a leaked session table (a
 * heap dump, a state file) does not let anyone resume; comparing digests of equal length lets the
 * check run in constant time whatever the candidate's length.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** A fresh secret: 256 random bits, base64url (43 characters, within the protocol's 256). */
export function newResumeSecret(): string {
  return randomBytes(32).toString('base64url');
}

export function hashResumeSecret(secret: string): Buffer {
  return createHash('sha256').update(secret, 'utf8').digest();
}

/** True when `candidate` is the secret whose digest is `digest`; constant time. */
export function resumeSecretMatches(digest: Buffer, candidate: string): boolean {
  return timingSafeEqual(digest, hashResumeSecret(candidate));
}
