/**
 * The agent as one self-contained ESM file, for deployment to hosts that have node but not rjob.
 *
 * A build (`npm run build`) writes it to `dist/agent-bundle.mjs` (scripts/bundle-agent.mjs). When
 * this module runs from its TypeScript source (tests, a clean checkout) it always bundles in
 * memory instead: a bundle in `dist` may be older than the sources being tested. Built with
 * esbuild from the workspace sources (`source` condition), node built-ins left external; the
 * runtime's worker and child entries are pointed at the bundle itself (see
 * scripts/agent-bundle-entry.mjs for how one file plays all three roles).
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { ErrorCode, RjobError } from '@rjob/core';

export interface AgentBundle {
  /** The bundled agent's version (this package's: they are released together). */
  version: string;
  /** Hex sha256 of `bytes`. */
  sha256: string;
  bytes: Buffer;
  /** The file name it is deployed under: `agent-<version>-<first 16 hex of sha256>.mjs`. */
  fileName: string;
}

/**
 * This package's root: one level up from src/ or dist/; when this module was bundled into another
 * program (the `rjob` CLI's bundle), found by name, as that program depends on this package.
 */
const PACKAGE_ROOT = /[\\/](src|dist)[\\/]agent-bundle\.[jt]s$/.test(fileURLToPath(import.meta.url))
  ? new URL('../', import.meta.url)
  : new URL('./', import.meta.resolve('@rjob/transport-ssh/package.json'));
/** Where a build puts the bundle, relative to the package root. */
const BUILT_BUNDLE_URL = new URL('dist/agent-bundle.mjs', PACKAGE_ROOT);
const ENTRY_PATH = fileURLToPath(new URL('scripts/agent-bundle-entry.mjs', PACKAGE_ROOT));
const PACKAGE_JSON_URL = new URL('package.json', PACKAGE_ROOT);

/** The runtime module whose entry-file URLs are redirected to the bundle. */
const RUNTIME_HOST = /[\\/]core[\\/]src[\\/]runtime[\\/]host\.ts$/;
const ENTRY_URLS = [
  "new URL('./worker-entry.js', import.meta.url)",
  "new URL('./child-entry.js', import.meta.url)",
];

/**
 * Bundles the agent in memory with esbuild. Needs the workspace sources and esbuild (a dev
 * dependency: its platform binary comes without install scripts, so `allowScripts` stays false).
 */
export async function buildAgentBundle(): Promise<Buffer> {
  let esbuild: typeof import('esbuild');
  try {
    esbuild = await import('esbuild');
  } catch (error) {
    throw new RjobError(
      ErrorCode.InvalidArgument,
      'Cannot bundle the rjob agent: esbuild is not installed and no built dist/agent-bundle.mjs was found.',
      { cause: error },
    );
  }
  const result = await esbuild.build({
    entryPoints: [ENTRY_PATH],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    conditions: ['@rjob/source'],
    write: false,
    legalComments: 'none',
    logLevel: 'silent',
    banner: { js: '// rjob agent, bundled by @rjob/transport-ssh for deployment over SSH.' },
    plugins: [
      {
        name: 'rjob-runtime-entries',
        setup(build) {
          build.onLoad({ filter: RUNTIME_HOST }, async (args) => {
            let text = await readFile(args.path, 'utf8');
            for (const expression of ENTRY_URLS) {
              // Fail the build rather than ship a bundle whose jobs look for files that are not there.
              if (!text.includes(expression)) {
                throw new Error(`agent bundle: ${args.path} no longer contains ${expression}`);
              }
              text = text.replace(expression, 'new URL(import.meta.url)');
            }
            return { contents: text, loader: 'ts' };
          });
        },
      },
    ],
  });
  const output = result.outputFiles[0];
  if (!output) throw new Error('agent bundle: esbuild produced no output');
  return Buffer.from(output.contents);
}

let cached: Promise<AgentBundle> | undefined;

/**
 * The bundle to deploy: `dist/agent-bundle.mjs` when running from a build, else bundled in memory
 * (once per process).
 */
export function loadAgentBundle(): Promise<AgentBundle> {
  cached ??= (async () => {
    const fromSource = import.meta.url.endsWith('.ts');
    let bytes: Buffer | undefined;
    if (!fromSource) bytes = await readFile(BUILT_BUNDLE_URL).catch(() => undefined);
    bytes ??= await buildAgentBundle();
    const { version } = JSON.parse(await readFile(PACKAGE_JSON_URL, 'utf8')) as { version: string };
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    return { version, sha256, bytes, fileName: `agent-${version}-${sha256.slice(0, 16)}.mjs` };
  })();
  cached.catch(() => {
    cached = undefined;
  });
  return cached;
}
