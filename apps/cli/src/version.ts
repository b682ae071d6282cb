/**
 * This CLI's version: written into the bundle when it is built (scripts/bundle.mjs), else read from
 * its package.json (one level up from src/ and dist/).
 */
declare const __RJOB_CLI_VERSION__: string | undefined;
let cached: Promise<string> | undefined;

export function cliVersion(): Promise<string> {
  if (typeof __RJOB_CLI_VERSION__ === 'string') return Promise.resolve(__RJOB_CLI_VERSION__);
  cached ??= (async () => {
    const { readFile } = await import('node:fs/promises');
    for (const path of ['../package.json', '../../package.json']) {
      const pkg = await readFile(new URL(path, import.meta.url), 'utf8').then(
        (text) => JSON.parse(text) as { name?: string; version?: string },
        () => undefined,
      );
      if (pkg?.name === 'rjob' && pkg.version) return pkg.version;
    }
    return 'unknown';
  })();
  return cached;
}

/** What a local agent started by this CLI calls its software in the handshake. */
export async function agentSoftware(): Promise<string> {
  return `rjob/${await cliVersion()}`;
}
