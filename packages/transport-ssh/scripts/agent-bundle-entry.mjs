// @ts-check
/**
 * Entry of the single-file agent bundle (`dist/agent-bundle.mjs`) that the SSH transport deploys
 * to hosts with node but without rjob. Only esbuild reads this file; it lives in the monorepo and
 * points at the workspace sources.
 *
 * One file has to play three roles, because the agent's runtime starts its JS-work runners from
 * entry files: the bundle build points the runtime's worker and child entries at the bundle
 * itself, and this entry picks the role at start:
 *
 * - in a worker thread: the ThreadJob runner (worker-entry.js);
 * - spawned with an IPC channel and no arguments, as BackgroundJob's node mode spawns its child:
 *   the node-child runner (child-entry.js). The agent itself always gets arguments;
 * - otherwise: the `rjob-agent` command line (`--stdio`, `daemon`, ...). The `--stdio` bridge
 *   starts its daemon with `process.argv[1]`, which is this bundle.
 *
 * The imports are dynamic so that esbuild keeps each role's modules lazy: a worker does not
 * evaluate the agent, and the agent does not evaluate a runner entry (they throw outside their role).
 */
import { isMainThread } from 'node:worker_threads';

if (!isMainThread) {
  await import('../../core/src/runtime/worker-entry.js');
} else if (process.send !== undefined && process.argv.length === 2) {
  await import('../../core/src/runtime/child-entry.js');
} else {
  const { main } = await import('../../agent/src/cli-main.ts');
  process.exit(await main(process.argv.slice(2)));
}
