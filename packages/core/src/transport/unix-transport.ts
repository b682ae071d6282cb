import { createConnection } from 'node:net';
import { ErrorCode, RjobError } from '../errors.js';
import { channelFromDuplex, defineTransport, type TransportChannel } from './transport.js';

/**
 * Reaches an agent on a Unix socket path: the local agent daemon's per-user socket
 * (`rjob agent`), which the `--stdio` door and the CLI also use.
 */
export const unixSocketTransport = defineTransport<string>({
  name: 'unix',
  connect: (socketPath, { maxFrameBytes, signal }) =>
    new Promise<TransportChannel>((resolve, reject) => {
      const socket = createConnection({ path: socketPath, ...(signal ? { signal } : {}) });
      socket.once('error', (error: NodeJS.ErrnoException) => {
        reject(
          new RjobError(
            ErrorCode.AgentUnreachable,
            `No rjob agent listens on ${socketPath} (${error.code ?? error.message}).`,
            { cause: error, details: { socketPath } },
          ),
        );
      });
      socket.once('connect', () => {
        socket.removeAllListeners('error');
        resolve(channelFromDuplex(socket, { maxFrameBytes }));
      });
    }),
});
