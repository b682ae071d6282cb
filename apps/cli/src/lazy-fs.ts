/**
 * node:fs/promises on first use. Loading it also loads node's readline and file-stream modules, a
 * few milliseconds of every start; `rjob get` initializes the modules that import this but never
 * touches the disk through them (docs/decisions.md, "CLI start-up: where the time goes").
 */
import type * as FsPromises from 'node:fs/promises';

export const fsp = (): typeof FsPromises => process.getBuiltinModule('node:fs/promises');
