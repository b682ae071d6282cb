// @ts-check
/**
 * Entry of a ThreadJob worker: the JS-work runtime on `worker_threads.parentPort`. Plain JS so a
 * worker starts without a build or a TypeScript loader.
 */
import { parentPort } from 'node:worker_threads';
import { serve } from './work-runner.js';

if (!parentPort) throw new Error('worker-entry.js must run in a worker thread.');
const port = parentPort;
serve({
  post: (message, transfer) => port.postMessage(message, transfer),
  on: (handler) => port.on('message', handler),
});
