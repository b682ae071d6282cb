/** The error-code table of @rjob/transport-ssh (`@rjob/transport-ssh/codes`: no dependencies). */
/**
 * Error codes raised by @rjob/transport-ssh. Each refusal reason has its own code so that callers
 * (and fan-out child jobs) can say *why* a host was not reached without parsing messages.
 */
export const SshErrorCode = {
  /** The host's key is not in any known_hosts file and the policy does not allow adding it. */
  HostKeyUnknown: 'ERR_SSH_HOST_KEY_UNKNOWN',
  /** known_hosts holds a different key of the same type for this host: possible man-in-the-middle. */
  HostKeyChanged: 'ERR_SSH_HOST_KEY_CHANGED',
  /** The host presented a key marked `@revoked`. */
  HostKeyRevoked: 'ERR_SSH_HOST_KEY_REVOKED',
  /** Nothing listens on the host's SSH port (TCP connection refused). */
  ConnectRefused: 'ERR_SSH_CONNECT_REFUSED',
  /** The host name does not resolve. */
  DnsFailed: 'ERR_SSH_DNS_FAILED',
  /** The TCP connection or SSH handshake did not finish within the connect timeout. */
  ConnectTimeout: 'ERR_SSH_CONNECT_TIMEOUT',
  /** Any other failure to reach the host (unreachable network, reset during handshake, ...). */
  ConnectFailed: 'ERR_SSH_CONNECT_FAILED',
  /**
   * The server accepted none of the offered authentication methods (or hung up during them). The
   * message lists the methods the server offered and what was skipped or refused: an encrypted
   * key with nobody to ask, three wrong passphrases or passwords. Never a secret.
   */
  AuthFailed: 'ERR_SSH_AUTH_FAILED',
  /** An ssh_config file or a target string could not be understood. */
  ConfigInvalid: 'ERR_SSH_CONFIG_INVALID',
  /**
   * The remote agent command was not found (exit 127): rjob is not installed on that host, and
   * (with deployment on) it has no node to deploy it to either.
   */
  NoAgent: 'ERR_SSH_NO_AGENT',
  /** The server refused to open a channel on an established connection. */
  ChannelFailed: 'ERR_SSH_CHANNEL_FAILED',
  /** Uploading or verifying the agent bundle on a host with node but without rjob failed. */
  DeployFailed: 'ERR_SSH_DEPLOY_FAILED',
  /**
   * The host's ssh_config ProxyCommand could not be started, or ended (exit code and stderr in the
   * message) before the SSH connection was up.
   */
  ProxyCommandFailed: 'ERR_SSH_PROXY_COMMAND',
} as const;

export type SshErrorCodeValue = (typeof SshErrorCode)[keyof typeof SshErrorCode];

/**
 * The codes that mean "could not get there" (the host, its port, its key, the login, the listener):
 * `rjob invoke` counts such a host as unreachable, and the CLI exits 4. Every code of this table is
 * one: a transport's errors are all about reaching the target.
 */
export const SSH_UNREACHABLE_CODES: ReadonlySet<string> = new Set(Object.values(SshErrorCode));
