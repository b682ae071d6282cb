/**
 * A transport that reaches an rjob agent through any command that speaks the protocol on its
 * stdio: `docker exec -i CONTAINER rjob agent --stdio`, `kubectl exec -i POD -- rjob agent --stdio`,
 * or a local `rjob agent --stdio`. Copy this file to write your own: everything about sessions,
 * sequencing, heartbeats and reconnects lives in @rjob/core; a transport only yields a link.
 */
import { spawn } from 'node:child_process';
import { PassThrough } from 'node:stream';
import { channelFromDuplex, defineTransport, ErrorCode, RjobError, type TransportChannel } from '@rjob/core';

/** The link's close reason when the command exits with a failure (no such container, no agent, ...). */
export const COMMAND_EXITED = 'ERR_COMMAND_EXITED';

/** How long a command may take to exit after its link closed before it is killed. */
export const COMMAND_EXIT_GRACE_MS = 5_000;

export interface CommandTarget {
  /** The program to run, e.g. `docker`. */
  command: string;
  /** Its arguments, e.g. `['exec', '-i', 'web1', 'rjob', 'agent', '--stdio']`. */
  args?: string[];
  /** Environment for the command. Default: this process's. */
  env?: NodeJS.ProcessEnv;
}

export const commandTransport = defineTransport<CommandTarget>({
  name: 'command',
  connect(target, { maxFrameBytes, signal }) {
    return new Promise<TransportChannel>((resolve, reject) => {
      const child = spawn(target.command, target.args ?? [], {
        // stderr is the command's own diagnostics (docker's, kubectl's): pass it through.
        stdio: ['pipe', 'pipe', 'inherit'],
        env: target.env ?? process.env,
        signal,
      });
      const onSpawnError = (error: Error) => {
        reject(
          new RjobError(ErrorCode.JobStartFailed, `Could not run ${target.command}: ${error.message}`, {
            cause: error,
            details: { command: target.command },
          }),
        );
      };
      child.once('error', onSpawnError);
      child.once('spawn', () => {
        child.off('error', onSpawnError);
        // The link sees copies of stdout and stdin that end only once the command's exit status is
        // known: a command that fails (`docker exec` on a missing container) closes the link with a
        // coded reason, which the session keeps, instead of a bare "closed by the peer".
        const stdout = new PassThrough();
        const stdin = new PassThrough();
        child.stdout.pipe(stdout, { end: false });
        stdin.pipe(child.stdin);
        // Writes after the command exited fail with EPIPE; the exit itself is what the link reports.
        child.stdin.on('error', () => {});
        const link = channelFromDuplex({ readable: stdout, writable: stdin }, { maxFrameBytes });
        // Closing the link ends the command's stdin, so it reads what was sent and exits; one that
        // lingers is killed after a grace period. No process is left behind either way.
        link.onClose(() => {
          stdin.end();
          if (child.exitCode === null && child.signalCode === null) {
            setTimeout(() => child.kill(), COMMAND_EXIT_GRACE_MS).unref();
          }
        });
        child.once('close', (code, sig) => {
          if (code !== 0) {
            link.close(
              new RjobError(COMMAND_EXITED, `${target.command} exited with ${sig ?? code}`, {
                details: { command: target.command, exitCode: code, signal: sig },
              }),
            );
          }
          stdout.end();
        });
        resolve(link);
      });
    });
  },
});
