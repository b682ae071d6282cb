// Done-when 6 of "RemoteJob over WebSocket": 500 sessions open at once on one agent over wss://,
// each running a short job, all complete. The agent runs in its own process so its peak resident
// set (VmHWM) is its own and can be reported.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSession, type Session } from '@rjob/core';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { type AgentProcess, spawnAgent } from './fixtures/spawn-agent.js';
import { wsTransport } from './ws-transport.js';

const TOKEN = 'scale-token-0123456789abcdef';
const SESSIONS = 500;

let dir: string;
let agent: AgentProcess;
const sessions: Session<string | URL>[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rjob-ws-scale-'));
  agent = await spawnAgent(dir, TOKEN);
});

afterEach(async () => {
  await Promise.all(sessions.splice(0).map((session) => session.close().catch(() => {})));
  await agent.stop();
  await rm(dir, { recursive: true, force: true });
});

it(`${SESSIONS} concurrent wss sessions on one agent, each running a short job, all complete`, async () => {
  const transport = wsTransport({ token: TOKEN, handshakeTimeoutMs: 60_000 });
  const rssBefore = await agent.peakRssKiB();
  // Every session is opened before any job starts, so all of them are open at the same time.
  const opened = await Promise.all(
    Array.from({ length: SESSIONS }, (_, i) =>
      openSession(transport, agent.pinnedUrl, { computerName: `client${i}`, handshakeTimeoutMs: 60_000 }),
    ),
  );
  sessions.push(...opened);
  expect(opened.every((session) => session.state === 'Opened')).toBe(true);
  expect(new Set(opened.map((session) => session.sessionId)).size).toBe(SESSIONS);

  const outputs = await Promise.all(
    opened.map(async (session, i) => {
      const invocation = session.invoke({ definition: { command: `echo job-${i}` } });
      const lines: unknown[] = [];
      for await (const record of invocation) lines.push(record.data);
      const info = await invocation.result;
      return { lines, state: info.state };
    }),
  );
  outputs.forEach(({ lines, state }, i) => {
    expect(state).toBe('Completed');
    expect(lines).toEqual([`job-${i}`]);
  });

  const peak = await agent.peakRssKiB();
  // Reported, not asserted (tests never assert resource timings or sizes that depend on the machine).
  console.log(
    `agent peak RSS with ${SESSIONS} sessions: ${(peak / 1024).toFixed(1)} MiB (idle: ${(rssBefore / 1024).toFixed(1)} MiB)`,
  );
  expect(peak).toBeGreaterThan(0);
});
