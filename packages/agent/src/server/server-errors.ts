/** Error codes the agent server adds for RPC failures (beside core's and the agent's). */
export const ServerErrorCode = {
  /** The request named a method the agent does not implement. */
  UnknownMethod: 'ERR_UNKNOWN_METHOD',
  /** The session was closed (or expired) while the request was in progress. */
  SessionClosed: 'ERR_SESSION_CLOSED',
  /**
   * `job.receiveToFile` could not write its file (the OS code, e.g. ENOENT or EACCES, is in
   * `details.osCode`); no record was consumed.
   */
  FileWrite: 'ERR_FILE_WRITE',
  /** A bug in the agent: the request failed with an uncoded error. The agent keeps running. */
  Internal: 'ERR_AGENT_INTERNAL',
  /** Another agent already listens on the socket, or holds the state directory's lock. */
  AgentRunning: 'ERR_AGENT_RUNNING',
  /** The socket's directory is not private to this user. */
  SocketDirInsecure: 'ERR_SOCKET_DIR_INSECURE',
} as const;
