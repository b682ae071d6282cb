// @ts-check
/**
 * Build step after `tsc -b`: writes the single-file agent bundle to dist/agent-bundle.mjs, which
 * the SSH transport deploys to hosts that have node but not rjob. It uses the freshly compiled
 * dist/agent-bundle.js so the build and the on-demand path share one esbuild configuration.
 */
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

const { buildAgentBundle } = await import('../dist/agent-bundle.js');
const out = fileURLToPath(new URL('../dist/agent-bundle.mjs', import.meta.url));
await mkdir(fileURLToPath(new URL('../dist/', import.meta.url)), { recursive: true });
const bytes = await buildAgentBundle();
// Through a temp name: a test reading dist while this runs sees the old file or the new, whole.
await writeFile(`${out}.tmp`, bytes);
await rename(`${out}.tmp`, out);
console.log(`wrote ${out} (${bytes.length} bytes)`);
