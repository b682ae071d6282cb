export {
  createAuthShared,
  DEFAULT_MAX_PROMPT_TRIES,
  type SshAuthShared,
  type SshIdentity,
  type SshPrompter,
  type SshPromptRequest,
} from './auth.js';
export { isEncryptedKey } from './keys.js';
export { type ConnectSshOptions, connectSsh, execOnce, type SshConnection } from './connect.js';
export { SSH_UNREACHABLE_CODES, SshErrorCode, type SshErrorCodeValue, toSshConnectError } from './errors.js';
export { matchPatternList, type PatternListMatch, wildcardMatch } from './host-patterns.js';
export {
  type CheckHostKeyOptions,
  changedHostKeyWarning,
  checkHostKey,
  DEFAULT_GLOBAL_KNOWN_HOSTS_FILES,
  defaultUserKnownHostsFiles,
  entryMatchesName,
  fingerprintSha256,
  type HostKeyDecision,
  type HostKeyQuery,
  type HostKeyStatus,
  type HostKeyVerification,
  hashKnownHostsName,
  type KnownHostsEntry,
  type KnownHostsProblem,
  keyTypeOfBlob,
  knownHostsName,
  type ParsedKnownHosts,
  parseKnownHosts,
  readKnownHostsFiles,
  type StrictHostKeyChecking,
  verifyHostKey,
  verifyHostKeyInEntries,
} from './known-hosts.js';
export {
  parseSshConfigText,
  parseSshTarget,
  type ResolveSshConfigOptions,
  resolveSshConfig,
  type SshHostConfig,
  type SshTarget,
} from './ssh-config.js';
export {
  DEFAULT_AGENT_COMMAND,
  DEFAULT_MAX_CHANNELS_PER_CONNECTION,
  defaultRemoteAgentSockets,
  isAgentMissing,
  type SshTransportOptions,
  type SshTransportTarget,
  sshTransport,
} from './ssh-transport.js';
export { type AgentBundle, buildAgentBundle, loadAgentBundle } from './agent-bundle.js';
export {
  type DeployResult,
  deployAgent,
  MIN_REMOTE_NODE_VERSION,
  nodeVersionAtLeast,
  parseProbe,
  probeRemoteNode,
  type RemoteNodeProbe,
  shellQuote,
  withAgentDeploy,
} from './deploy.js';
export {
  DEFAULT_SSH_EXEC_STOP_GRACE_MS,
  type InvokeManySshOptions,
  invokeManySsh,
  plainExecCommand,
  plainShellCommand,
  SSH_EXEC_JOB_TYPE_NAME,
  type SshExecDefinition,
  type SshExecJobTypeOptions,
  type SshRemoteOrExecDefinition,
  sshExecJobType,
  sshRemoteOrExecJobType,
} from './plain-exec.js';
