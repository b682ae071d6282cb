/**
 * Things the agent dropped or could not do on its own and that a human should hear about: damaged
 * state files found on load (the damaged item is dropped, everything else kept), a full disk that
 * paused a job's output. Each one is kept in memory (for `rjob agent status`, through the agent's
 * log) and written as one line to the sink the daemon installs (its log, `agent.log`).
 *
 * The registry is per process: a daemon is one agent, and library users who open spools or stores
 * themselves read {@link incidents} or install their own sink.
 */

export type IncidentKind = 'damaged' | 'disk-full' | 'disk-space-back' | 'lost';

export interface Incident {
  kind: IncidentKind;
  /** Error code naming what happened (ERR_STATE_DAMAGED, ERR_DISK_FULL, ...). */
  code: string;
  /** What it is about, for a human: `job file /path/job.bin`. */
  subject: string;
  /** What was done about it (`dropped`, `records 5–7 lost, the rest kept`, ...). */
  detail: string;
  time: Date;
}

/** Keeps the registry bounded whatever happens: the oldest ones go first. */
const MAX_KEPT = 1000;
const kept: Incident[] = [];
let sink: ((line: string, incident: Incident) => void) | undefined;

/** The line an incident is logged as (without the timestamp the log adds). */
export function formatIncident(incident: Incident): string {
  return `${incident.kind}: ${incident.subject}: ${incident.detail} (${incident.code})`;
}

/** Records an incident and hands its line to the sink. Never throws. */
export function reportIncident(incident: Omit<Incident, 'time'> & { time?: Date }): Incident {
  const full: Incident = { ...incident, time: incident.time ?? new Date() };
  kept.push(full);
  if (kept.length > MAX_KEPT) kept.splice(0, kept.length - MAX_KEPT);
  try {
    sink?.(formatIncident(full), full);
  } catch {
    // A log that cannot be written (a full disk) must not break the write that reported it.
  }
  return full;
}

/** Every incident reported in this process (the last {@link MAX_KEPT}). */
export function incidents(): readonly Incident[] {
  return kept;
}

/** Where incident lines go (the daemon's log). Returns a function that removes it. */
export function setIncidentSink(next: ((line: string, incident: Incident) => void) | undefined): () => void {
  const previous = sink;
  sink = next;
  return () => {
    if (sink === next) sink = previous;
  };
}
