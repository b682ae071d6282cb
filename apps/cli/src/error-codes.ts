/**
 * The codes the `rjob` CLI adds to those of the packages it composes (core's ErrorCode,
 * ProtocolErrorCode, SessionErrorCode; the agent's AgentErrorCode; the transports' tables). No
 * imports: every command loads it.
 */
export const CliErrorCode = {
  /** Bad flag, missing argument, unknown verb (exit 2). */
  Usage: 'ERR_USAGE',
  /** No session of that name in the CLI's session file (exit 3). */
  UnknownSession: 'ERR_UNKNOWN_SESSION',
  /** The CLI's own state file is held by another rjob command for too long. */
  StateLocked: 'ERR_STATE_LOCKED',
  /** An agent answers on the socket but its pid file is missing (`rjob agent stop`). */
  AgentUnknownPid: 'ERR_AGENT_UNKNOWN_PID',
  /** `wait --timeout` ran out before the jobs finished (exit 5). */
  Timeout: 'ERR_TIMEOUT',
  /**
   * The local agent was started by another rjob version and still runs jobs: a warning, the
   * command goes on (it is restarted once idle).
   */
  AgentVersion: 'ERR_AGENT_VERSION',
  /**
   * The config file (`$RJOB_CONFIG`, `~/.config/rjob/config.json`) cannot be read or is not
   * `{ "plugins": [...] }`: no plugin of it is used.
   */
  PluginConfig: 'ERR_PLUGIN_CONFIG',
  /**
   * A plugin the config file names cannot be found or imported, exports no plugin, or takes a job
   * type name already taken: it is left out, the other plugins are used.
   */
  PluginLoad: 'ERR_PLUGIN_LOAD',
  /** An uncoded error reached the top of a command: a bug (exit 10). */
  Internal: 'ERR_INTERNAL',
} as const;

export type CliErrorCodeValue = (typeof CliErrorCode)[keyof typeof CliErrorCode];
