/**
 * A host without node, for tests: a directory of links to a few shell tools, to be a test user's
 * whole PATH (`startSshd({ extraConfig: [`SetEnv PATH=${bin}`] })`). node lives in /usr/bin (and
 * /bin may be a link to it), so a PATH of system directories would still find it.
 */
import { execFileSync } from 'node:child_process';
import { symlink } from 'node:fs/promises';
import { join } from 'node:path';

/** The programs on such a PATH. */
export const NO_NODE_TOOLS = [
  'sh',
  'sleep',
  'setsid',
  'echo',
  'cat',
  'kill',
  'id',
  'printf',
  'true',
  'false',
  'hostname',
] as const;

/** Makes `<dir>/bin` (mode 755) with links to {@link NO_NODE_TOOLS}; returns its path. */
export async function noNodePath(dir: string): Promise<string> {
  const bin = join(dir, 'bin');
  execFileSync('install', ['-d', '-m', '755', bin]);
  for (const tool of NO_NODE_TOOLS) {
    const path = execFileSync('sh', ['-c', `command -v ${tool}`])
      .toString()
      .trim();
    await symlink(path, join(bin, tool));
  }
  return bin;
}
