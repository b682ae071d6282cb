/** A probe of the agent's Unix socket, on node built-ins only (the light `@rjob/agent/cli` entry uses it). */
import { createConnection } from 'node:net';

/** True when something accepts connections on `socketPath`. */
export function socketIsLive(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createConnection(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}
