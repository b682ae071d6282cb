/**
 * `rjob agent --listen URL`: the state directory's agent in the foreground, serving WebSocket
 * clients (listenWs) and, as the daemon does, local commands on its Unix socket, until
 * SIGTERM/SIGINT. Refused (ERR_AGENT_RUNNING) while another agent (the daemon) holds the directory.
 */
import { readFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { resolve } from 'node:path';
import { AgentServer, ensureStateDir, linkErrorLogger, listenUnix, serveAgent } from '@rjob/agent';
import { RjobError } from '@rjob/core';
import { createWsAuth, listenWs, readOrCreateToken, type WsAuth, WsErrorCode } from '@rjob/transport-ws';
import { CliError, type CliIo, ExitCode, usageError } from '../io.js';
import type { StatePaths } from '../state.js';

export interface ListenFlags {
  listen: string;
  cert?: string;
  key?: string;
  tokenFile?: string;
  insecure: boolean;
}

/** Parses the flags after `rjob agent` when `--listen` is among them. */
export function parseListenFlags(argv: readonly string[]): ListenFlags {
  const out: Partial<ListenFlags> & { insecure: boolean } = { insecure: false };
  const names = {
    '--listen': 'listen',
    '--cert': 'cert',
    '--key': 'key',
    '--token-file': 'tokenFile',
  } as const;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--insecure') {
      out.insecure = true;
      continue;
    }
    const eq = arg.indexOf('=');
    const name = (eq > 0 ? arg.slice(0, eq) : arg) as keyof typeof names;
    const key = names[name];
    if (key === undefined) throw usageError(`unexpected argument ${arg}`);
    const value = eq > 0 ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined || value === '') throw usageError(`${name} needs a value`);
    out[key] = value;
  }
  if (out.listen === undefined) throw usageError('--listen needs a value');
  if (!/^wss?:\/\//i.test(out.listen))
    throw usageError(`--listen takes a ws:// or wss:// URL, not ${out.listen}`);
  if ((out.cert === undefined) !== (out.key === undefined))
    throw usageError('give both --cert and --key, or neither');
  return out as ListenFlags;
}

export async function agentListen(argv: readonly string[], io: CliIo, paths: StatePaths): Promise<number> {
  const flags = parseListenFlags(argv);
  const abs = (path: string): string => resolve(io.cwd, path);
  const stateDir = await ensureStateDir(paths.stateDir);
  const [cert, key] = await Promise.all(
    [flags.cert, flags.key].map((file) =>
      file === undefined
        ? undefined
        : readFile(abs(file), 'utf8').catch(() => {
            throw usageError(`cannot read ${abs(file)}`);
          }),
    ),
  );
  let auth: WsAuth;
  let tokenFile: string;
  if (flags.tokenFile === undefined) {
    auth = await createWsAuth({ stateDir });
    tokenFile = auth.tokenFile!;
  } else {
    tokenFile = abs(flags.tokenFile);
    auth = await createWsAuth({
      stateDir,
      tokens: { [await readOrCreateToken(tokenFile)]: userInfo().username },
    });
  }
  const { agentSoftware } = await import('../version.js');
  // Named as the daemon is: local commands of this rjob recognise it as their own (context.ts).
  const server = new AgentServer({
    stateDir,
    authenticate: auth.authenticate,
    software: await agentSoftware(),
  });
  const log = (line: string): void => void io.stderr.write(`rjob agent: ${line}\n`);
  const onLinkError = linkErrorLogger(log);
  let pinnedUrl = '';
  await serveAgent(server, {
    stateDir,
    log,
    doors: [
      async () => {
        try {
          const door = await listenWs(server, {
            listen: flags.listen,
            auth,
            insecure: flags.insecure,
            ...(cert !== undefined && key !== undefined ? { cert, key } : {}),
            onLinkError,
          });
          pinnedUrl = door.pinnedUrl;
          return door;
        } catch (error) {
          if (RjobError.is(error) && error.code === WsErrorCode.Insecure) {
            throw new CliError(
              ExitCode.Usage,
              error.code,
              `${error.message.replace(/\.$/, '')}; or pass --insecure`,
            );
          }
          throw error;
        }
      },
      // Local commands (`rjob start`, `rjob get`) reach this agent as they would the daemon.
      // Reaching the 0600 socket is the authentication there, as with the daemon; tokens are the
      // WebSocket door's.
      () => listenUnix(server, { socketPath: paths.socketPath, identity: userInfo().username, onLinkError }),
    ],
    listening: () => log(`listening on ${pinnedUrl} (token file ${tokenFile})`),
  });
  return ExitCode.Ok;
}
