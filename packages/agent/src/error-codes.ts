/**
 * The agent's error codes: the one table of codes the agent adds to @rjob/core's (core's own, such
 * as ERR_SESSION_CLOSED or ERR_UNKNOWN_METHOD, are used from core's tables, never redefined). Every
 * error the agent raises is an `RjobError` carrying one of these codes or one of core's, so
 * programs branch on `code`. No imports: the light `--stdio` entry loads this file.
 */

export const AgentErrorCode = {
  /** The agent died (or was restarted) while the job was running; its results may be incomplete. */
  AgentRestarted: 'ERR_AGENT_RESTARTED',
  /** The spool was closed; it takes no appends and serves no reads. */
  SpoolClosed: 'ERR_SPOOL_CLOSED',
  /** The spool was sealed (its job finished); it takes no more appends. */
  SpoolSealed: 'ERR_SPOOL_SEALED',
  /** A spool segment holds bytes that are not a valid entry where a complete one was expected. */
  SpoolCorrupt: 'ERR_SPOOL_CORRUPT',
  /** Reading or writing a spool's files failed (disk full, I/O error); the spool takes no more work. */
  SpoolIo: 'ERR_SPOOL_IO',
  /** A persisted job or session file cannot be decoded. */
  StoreCorrupt: 'ERR_STORE_CORRUPT',
  /**
   * A file of the agent's state (a job or session file, a spool's records or meta) was damaged on
   * disk: the damaged item was dropped (and reported), everything else was kept.
   */
  StateDamaged: 'ERR_STATE_DAMAGED',
  /** The disk (or the user's quota) holding the agent's state is full (ENOSPC, EDQUOT). */
  DiskFull: 'ERR_DISK_FULL',
  /** The state directory exists but is not a directory we own. */
  StateDirInsecure: 'ERR_STATE_DIR_INSECURE',
  /** A job started `--after` other jobs did not run: one of them Failed or was Stopped. */
  DependencyFailed: 'ERR_DEPENDENCY_FAILED',
  /** No job group of that name (`rjob group list` shows them). */
  GroupNotFound: 'ERR_GROUP_NOT_FOUND',
  /** The group still has running or waiting jobs (`group remove`). */
  GroupInUse: 'ERR_GROUP_IN_USE',
  /**
   * The state directory's lock is stale, but a start that was removing it died half way: the
   * message names the two files to remove.
   */
  StateLockStuck: 'ERR_STATE_LOCK_STUCK',
  /**
   * `job.receiveToFile` could not write its file (the OS code, e.g. ENOENT or EACCES, is in
   * `details.osCode`); no record was consumed.
   */
  FileWrite: 'ERR_FILE_WRITE',
  /** A bug in the agent: the request failed with an uncoded error. The agent keeps running. */
  Internal: 'ERR_AGENT_INTERNAL',
  /**
   * Another agent already serves the state directory (it holds `agent.lock`; its pid is in the
   * message and `details.pid`), or already listens on the socket.
   */
  AgentRunning: 'ERR_AGENT_RUNNING',
  /** The socket's directory is not private to this user. */
  SocketDirInsecure: 'ERR_SOCKET_DIR_INSECURE',
  /** `agent.stop` to an agent embedded in another program: only a daemon stops on a client's request. */
  StopUnsupported: 'ERR_AGENT_STOP_UNSUPPORTED',
} as const;

export type AgentErrorCodeValue = (typeof AgentErrorCode)[keyof typeof AgentErrorCode];
