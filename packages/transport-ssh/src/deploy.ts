/**
 * Agent deployment: a host where the agent command is not found but node (>= 20.19) is gets the
 * single-file agent bundle (agent-bundle.ts) in the remote user's cache directory,
 * `${XDG_CACHE_HOME:-$HOME/.cache}/rjob/agent-<version>-<sha256 prefix>.mjs`, and runs it.
 *
 * - One probe exec finds node, its version, the cache path and the sha256 of a file already
 *   there (computed by the remote node, so no `sha256sum` is needed).
 * - A missing or different file is uploaded through an exec channel (`cat > tmp`), its sha256 is
 *   checked remotely, and only then is it renamed into place, so a half-written or corrupted file
 *   is never run. The directory is created 0700: other users must not swap the file. Bundles of
 *   other versions in it are removed then; `onDeploy` tells the caller an upload happened.
 * - {@link withAgentDeploy} makes this invisible to the session client: the link it returns
 *   forwards to the exec'd agent; if that closes with ERR_SSH_NO_AGENT before saying anything, the
 *   frames sent so far are replayed to the deployed agent.
 */
import { createChannelController, RjobError, type TransportChannel, toCloseReason } from '@rjob/core';
import type { Client } from 'ssh2';
import { type AgentBundle, loadAgentBundle } from './agent-bundle.js';
import { SshErrorCode } from './errors.js';
import type { SshHostConfig } from './ssh-config.js';

/** The oldest node the bundle supports (the packages' `engines`). */
export const MIN_REMOTE_NODE_VERSION = '20.19.0';

/** What a host offers for deployment. */
export type RemoteNodeProbe =
  | { node: false }
  | { node: true; version: string; file: string; existingSha256: string | undefined };

/** Quotes a string for a POSIX shell (the remote login shell runs exec commands). */
export function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

/** A node one-liner's arguments start at argv[1] under `node -e`. Double quotes only: it sits in single quotes. */
const HASH_FILE_JS =
  'let h="-";try{h=require("crypto").createHash("sha256").update(require("fs").readFileSync(process.argv[1])).digest("hex")}catch{}' +
  'console.log("rjob-probe",process.versions.node,h,process.argv[1])';
const VERIFY_FILE_JS =
  'const h=require("crypto").createHash("sha256").update(require("fs").readFileSync(process.argv[1])).digest("hex");' +
  'if(h!==process.argv[2]){console.error("rjob: checksum mismatch after upload: "+h);process.exit(1)}';

function probeCommand(fileName: string): string {
  return [
    'command -v node >/dev/null 2>&1 || { echo rjob-probe no-node; exit 0; }',
    `node -e ${shellQuote(HASH_FILE_JS)} "\${XDG_CACHE_HOME:-$HOME/.cache}/rjob/"${shellQuote(fileName)}`,
  ].join('; ');
}

/** Parses the probe's one line. */
export function parseProbe(stdout: string): RemoteNodeProbe | undefined {
  const line = stdout.split('\n').find((l) => l.startsWith('rjob-probe '));
  if (!line) return undefined;
  if (line.trim() === 'rjob-probe no-node') return { node: false };
  const match = /^rjob-probe (\S+) (\S+) (.+)$/.exec(line);
  if (!match) return undefined;
  return {
    node: true,
    version: match[1]!,
    existingSha256: match[2] === '-' ? undefined : match[2]!,
    file: match[3]!,
  };
}

/** True when `version` (`x.y.z`) is at least `minimum`. */
export function nodeVersionAtLeast(version: string, minimum: string = MIN_REMOTE_NODE_VERSION): boolean {
  const a = version.split('.').map(Number);
  const b = minimum.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    if (Number.isNaN(x)) return false;
    if (x !== y) return x > y;
  }
  return true;
}

interface ExecResult {
  stdout: string;
  stderr: string;
  exitCode: number | null;
}

/** Runs one command, optionally feeding `input` to its stdin, and collects its output. */
function run(client: Client, command: string, host: SshHostConfig, input?: Buffer): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const fail = (error: unknown): void =>
      reject(
        new RjobError(
          SshErrorCode.ChannelFailed,
          `ssh: ${host.hostName}:${host.port}: could not open a channel to deploy the agent: ${String((error as Error)?.message ?? error)}`,
          { cause: error, details: { host: host.hostName, port: host.port } },
        ),
      );
    try {
      client.exec(command, (error, channel) => {
        if (error) return fail(error);
        let stdout = '';
        let stderr = '';
        let exitCode: number | null = null;
        channel.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
        channel.stderr.on(
          'data',
          (chunk: Buffer) => (stderr = (stderr + chunk.toString('utf8')).slice(-8192)),
        );
        channel.on('exit', (code: number | null) => (exitCode = code));
        channel.on('error', () => {});
        channel.on('close', () => resolve({ stdout, stderr, exitCode }));
        channel.end(input);
      });
    } catch (error) {
      fail(error);
    }
  });
}

/** Probes `host` for node and an already deployed copy of `bundle`. */
export async function probeRemoteNode(
  client: Client,
  host: SshHostConfig,
  bundle: Pick<AgentBundle, 'fileName'>,
): Promise<RemoteNodeProbe> {
  const result = await run(client, probeCommand(bundle.fileName), host);
  const probe = parseProbe(result.stdout);
  if (!probe) {
    throw new RjobError(
      SshErrorCode.ChannelFailed,
      `ssh: ${host.alias}: could not probe for node (exit ${result.exitCode}): ${result.stderr.trim()}`,
      { details: { host: host.hostName, port: host.port, stderr: result.stderr.trim() } },
    );
  }
  return probe;
}

/** The message of the error for a host with neither the agent nor a usable node. */
export function noAgentNoNodeMessage(alias: string, why: string): string {
  return (
    `ssh: ${alias}: the rjob agent is not installed there and it cannot be deployed (${why}). ` +
    'Sessions, disconnect/reconnect and results kept on the remote host need the agent; ' +
    'shell commands still run without it through plain exec (sshExecJobType).'
  );
}

export interface DeployResult {
  /** Absolute path of the verified bundle on the remote host. */
  file: string;
  /** False when a verified copy was already there. */
  uploaded: boolean;
  bundle: AgentBundle;
}

/**
 * Makes sure the agent bundle is on `host`, verified: returns its remote path. Fails with
 * ERR_SSH_NO_AGENT when there is no node (or it is too old), saying what still works.
 */
export async function deployAgent(client: Client, host: SshHostConfig): Promise<DeployResult> {
  const bundle = await loadAgentBundle();
  const probe = await probeRemoteNode(client, host, bundle);
  if (!probe.node || !nodeVersionAtLeast(probe.version)) {
    const why = probe.node
      ? `its node is ${probe.version}, older than ${MIN_REMOTE_NODE_VERSION}`
      : 'node is not on its PATH';
    throw new RjobError(SshErrorCode.NoAgent, noAgentNoNodeMessage(host.alias, why), {
      details: {
        host: host.hostName,
        port: host.port,
        node: probe.node ? probe.version : null,
        plainExec: true,
      },
    });
  }
  if (probe.existingSha256 === bundle.sha256) return { file: probe.file, uploaded: false, bundle };
  const file = shellQuote(probe.file);
  const upload = [
    'umask 077',
    `d=\${XDG_CACHE_HOME:-$HOME/.cache}/rjob`,
    'mkdir -p "$d"',
    'chmod 700 "$d"',
    `t=${file}.$$.tmp`,
    `{ cat > "$t" && node -e ${shellQuote(VERIFY_FILE_JS)} "$t" ${bundle.sha256} && mv -f "$t" ${file}; } || { s=$?; rm -f "$t"; exit $s; }`,
    // Older bundles go: a running agent has its code loaded already, and a client of another
    // version uploads its own again.
    `for o in "$d"/agent-*.mjs; do [ "$o" = ${file} ] || rm -f "$o"; done`,
  ].join(' && ');
  const result = await run(client, upload, host, bundle.bytes);
  if (result.exitCode !== 0) {
    throw new RjobError(
      SshErrorCode.DeployFailed,
      `ssh: ${host.alias}: deploying the rjob agent to ${probe.file} failed (exit ${result.exitCode}): ${result.stderr.trim()}`,
      { details: { host: host.hostName, port: host.port, file: probe.file, stderr: result.stderr.trim() } },
    );
  }
  return { file: probe.file, uploaded: true, bundle };
}

/**
 * A link that forwards to `first` and, if `first` closes with ERR_SSH_NO_AGENT before any frame
 * arrives, to the link `fallback` opens instead, replaying what was sent so far. The session
 * client sees one link either way.
 */
export function withAgentDeploy(
  first: TransportChannel,
  fallback: (reason: RjobError) => Promise<TransportChannel>,
): TransportChannel {
  let current: TransportChannel | undefined = first;
  /** Frames sent before the agent first answered: replayed to the deployed agent. */
  let unanswered: Uint8Array[] | undefined = [];
  let triedFallback = false;
  const controller = createChannelController({
    maxFrameBytes: first.maxFrameBytes,
    write(frame) {
      unanswered?.push(frame);
      // While the agent is being deployed there is no link yet: the frame waits in `unanswered`.
      return current ? current.send(frame) : true;
    },
    terminate(reason) {
      current?.close(reason);
      current = undefined;
    },
  });

  const attach = (link: TransportChannel): void => {
    link.onMessage((frame) => {
      unanswered = undefined;
      controller.deliver(frame);
    });
    link.onDrain?.(() => controller.drained());
    link.onClose((reason) => {
      if (link !== current) return;
      if (unanswered && !triedFallback && reason.code === SshErrorCode.NoAgent) {
        triedFallback = true;
        current = undefined;
        fallback(reason).then(
          (next) => {
            if (controller.isClosed) {
              next.close();
              return;
            }
            current = next;
            attach(next);
            for (const frame of unanswered ?? []) next.send(frame);
            // The dead link may have said "congested" to a send; the sender waits for a drain
            // that only the new link can give.
            controller.drained();
          },
          (error: unknown) => controller.closed(toCloseReason(error)),
        );
        return;
      }
      current = undefined;
      controller.closed(reason);
    });
  };
  attach(first);
  return controller.channel;
}
