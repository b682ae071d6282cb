/** `session.*`: the session's own description, its settings, and the client leaving it. */
import { stat } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import type { SessionInfo } from '@rjob/core';
import {
  invalidParams,
  isPlainObject,
  objectParams,
  optionalNonNegative,
  optionalString,
  requiredString,
} from '../wire.js';
import type { MethodTable, SessionScope } from './context.js';

export const sessionMethods: MethodTable = {
  'session.info': (scope) => scope.sessionInfo(),
  'session.configure': (scope, { params }) => configure(scope, params),
  // Answered with what the server sees: every session of the identity (see AgentServer).
  'session.list': (scope) => scope.listSessions(),
  'session.disconnect': (scope, call) => scope.disconnect(call),
  'session.close': (scope, call) => scope.close(call),
  'session.claim': (scope, { params }) =>
    scope.claimSession(requiredString(objectParams(params, 'session.claim'), 'sessionId')),
};

async function configure(scope: SessionScope, params: unknown): Promise<SessionInfo> {
  const p = objectParams(params, 'session.configure');
  const name = optionalString(p, 'name', 256);
  const cwdParam = optionalString(p, 'cwd');
  const idleTimeoutMs = optionalNonNegative(p, 'idleTimeoutMs');
  let env: Record<string, string> | undefined;
  if (p.env !== undefined) {
    if (!isPlainObject(p.env) || !Object.values(p.env).every((value) => typeof value === 'string')) {
      throw invalidParams('env must map names to strings.');
    }
    env = p.env as Record<string, string>;
  }
  let cwd: string | undefined;
  if (cwdParam !== undefined) {
    cwd = isAbsolute(cwdParam) ? cwdParam : resolve(scope.cwd, cwdParam);
    const info = await stat(cwd).catch(() => undefined);
    if (!info?.isDirectory()) throw invalidParams(`${cwd} is not a directory.`, { cwd });
  }
  // Check everything before changing anything, so a bad field leaves the session as it was.
  scope.configure({
    ...(name === undefined ? {} : { name }),
    ...(cwd === undefined ? {} : { cwd }),
    ...(env === undefined ? {} : { env }),
    ...(idleTimeoutMs === undefined ? {} : { idleTimeoutMs }),
  });
  return scope.sessionInfo();
}
