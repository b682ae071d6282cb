// @ts-check
/**
 * Entry of a node child that runs one piece of JS work (BackgroundJob's node mode): the JS-work
 * runtime on the IPC channel. Spawn it with `stdio` including `'ipc'` and
 * `serialization: 'advanced'` so Dates, Maps, BigInts and typed arrays keep their types.
 *
 * The child exits once its run is done and the `done` message is written: a job ends when its work
 * ends, whatever timers the work left behind.
 */
import { serve } from './work-runner.js';

const send = process.send?.bind(process);
if (!send) throw new Error('child-entry.js must be spawned with an IPC channel.');
serve(
  {
    post: (message) => {
      if (message.type === 'done') send(message, undefined, {}, () => process.exit(0));
      else send(message);
    },
    on: (handler) => process.on('message', (message) => handler(/** @type {any} */ (message))),
  },
  {},
);
// Nobody is left to receive records: end rather than run on unowned.
process.on('disconnect', () => process.exit(1));
