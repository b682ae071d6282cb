/**
 * What the running agent dropped or paused since it started, as its log (`agent.log`) tells:
 * the daemon writes `<ISO time> rjob-agent: starting (pid N, …)` first, then one line per incident
 * (`damaged: …`, `disk-full: …`, `disk-space-back: …`, `lost: …`).
 */
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { DAEMON_LOG_FILE } from '@rjob/agent';

/** Only the end of a long log is read: the running daemon's lines are at its end. */
const TAIL_BYTES = 4 * 1024 * 1024;
const INCIDENT = / rjob-agent: ((?:damaged|disk-full|disk-space-back|lost): .*)$/;
const START = ' rjob-agent: starting (pid ';

/**
 * The incident lines (`<time> damaged: … (ERR_…)`) the daemon `pid` logged (the last daemon that
 * logged when `pid` is unknown); empty when the log is missing or says nothing.
 */
export async function incidentLines(
  stateDir: string,
  pid: number | undefined,
): Promise<string[] & { logPath: string }> {
  const logPath = join(stateDir, DAEMON_LOG_FILE);
  const out = Object.assign([] as string[], { logPath });
  let text: string;
  try {
    const handle = await open(logPath, 'r');
    try {
      const { size } = await handle.stat();
      const length = Math.min(size, TAIL_BYTES);
      const buffer = Buffer.alloc(length);
      await handle.read(buffer, 0, length, size - length);
      text = buffer.toString('utf8');
    } finally {
      await handle.close();
    }
  } catch {
    return out;
  }
  const lines = text.split('\n');
  const marker = pid === undefined ? START : `${START}${pid},`;
  let from = -1;
  for (let i = lines.length - 1; i >= 0; i--) {
    if (lines[i]!.includes(marker)) {
      from = i;
      break;
    }
  }
  if (from < 0) return out;
  for (const line of lines.slice(from + 1)) {
    const match = INCIDENT.exec(line);
    if (match) out.push(`${line.slice(0, line.indexOf(' '))} ${match[1]}`);
  }
  return out;
}
