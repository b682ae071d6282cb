export {
  DAEMON_LOG_FILE,
  DAEMON_PID_FILE,
  type MainOptions,
  main,
  parseAgentArgs,
} from './cli-main.js';
export {
  linkErrorLogger,
  type OpenDoor,
  type ServeAgentOptions,
  serveAgent,
  writePidFile,
} from './doors/serve.js';
export {
  type BridgeOptions,
  bridgeStdioToDaemon,
  type StdioOptions,
  serveStdio,
} from './doors/stdio-door.js';
export {
  defaultSocketPath,
  listenUnix,
  socketIsLive,
  type UnixDoor,
  type UnixDoorOptions,
} from './doors/unix-door.js';
export { AgentErrorCode, type AgentErrorCodeValue, agentRestartedError } from './errors.js';
export { AgentServer, DEFAULT_IDLE_TIMEOUT_MS } from './server/agent-server.js';
export type {
  AgentServerOptions,
  AttachOptions,
  AttachResult,
  RestoreReport,
} from './server/agent-server-options.js';
export type { AgentSession } from './server/agent-session.js';
export type { PluginError } from './server/plugin-info.js';
export {
  type AgentTransport,
  type RemoteTargetDefinition,
  type RemoteTargetSettings,
  targetRemoteJobType,
} from './server/remote-jobs.js';
export { hashResumeSecret, newResumeSecret, resumeSecretMatches } from './server/secret.js';
// The spool and what its options and reads are made of.
export * from './spool/record-spool.js';
export { type SpooledJob, type SpoolJobOptions, spoolJob, toStoredJob } from './spool/spooled-job.js';
export { ensureStateDir, resolveStateDir } from './state-dir.js';
export {
  JobStore,
  type JobStoreOptions,
  type StoredJob,
  type StoredSession,
  type StoreSnapshot,
} from './store/job-store.js';
