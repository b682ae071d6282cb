/**
 * node:fs/promises on first use, for the modules of the agent's light entry (`@rjob/agent/cli`):
 * a CLI command that imports them to find the state directory or the socket need not load it.
 */
import type * as FsPromises from 'node:fs/promises';

export const fsp = (): typeof FsPromises => process.getBuiltinModule('node:fs/promises');
