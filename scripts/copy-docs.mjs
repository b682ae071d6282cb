// @ts-check
/**
 * Build step: copies the named pages of the repository's docs/ into the current package's docs/,
 * so they ship in its tarball and the README's and `--help`'s references resolve in an install.
 * Usage (from a package directory): node ../../scripts/copy-docs.mjs cli.md protocol.md
 */
import { copyFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const from = fileURLToPath(new URL('../docs/', import.meta.url));
const to = join(process.cwd(), 'docs');
await mkdir(to, { recursive: true });
for (const page of process.argv.slice(2)) await copyFile(join(from, page), join(to, page));
