/** Where to connect, as a user types it: parsed into host, user and port. */
import { ErrorCode, RjobError } from '@rjob/core';

/** Where to connect, as typed by a user: `host`, `user@host:port`, `ssh://user@host:port`. */
export interface SshTarget {
  host: string;
  user?: string;
  port?: number;
}

function invalidTarget(text: string, why: string): RjobError {
  return new RjobError(ErrorCode.InvalidArgument, `invalid ssh target '${text}': ${why}`, {
    details: { target: text },
  });
}

function parsePort(text: string, target: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) < 1 || Number(text) > 65535) {
    throw invalidTarget(target, `bad port '${text}'`);
  }
  return Number(text);
}

/**
 * Parses `host`, `user@host`, `user@host:port`, `[v6addr]:port` and `ssh://user@host:port/`.
 * A bare IPv6 address (several colons, no brackets) is taken as a host without port.
 */
export function parseSshTarget(text: string): SshTarget {
  let rest = text.trim();
  const isUri = rest.toLowerCase().startsWith('ssh://');
  if (isUri) {
    rest = rest.slice('ssh://'.length);
    if (rest.endsWith('/')) rest = rest.slice(0, -1);
    if (rest.includes('/')) throw invalidTarget(text, 'ssh:// targets take no path');
  }
  const target: SshTarget = { host: '' };
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    const user = rest.slice(0, at);
    target.user = isUri ? decodeURIComponent(user) : user;
    if (target.user === '') throw invalidTarget(text, 'empty user name');
    rest = rest.slice(at + 1);
  }
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']');
    if (close < 0) throw invalidTarget(text, "missing ']'");
    target.host = rest.slice(1, close);
    const after = rest.slice(close + 1);
    if (after.startsWith(':')) target.port = parsePort(after.slice(1), text);
    else if (after !== '') throw invalidTarget(text, `unexpected '${after}'`);
  } else {
    const colons = rest.split(':').length - 1;
    if (colons === 1) {
      const colon = rest.indexOf(':');
      target.host = rest.slice(0, colon);
      target.port = parsePort(rest.slice(colon + 1), text);
    } else {
      target.host = rest;
    }
  }
  if (target.host === '') throw invalidTarget(text, 'empty host');
  if (/\s/.test(target.host)) throw invalidTarget(text, 'white space in host');
  return target;
}
