/**
 * Sessions on an agent: results kept remote (S4), Invoke-Command, and disconnect / reconnect from
 * a new client object with every record delivered once (S5). Run: `npm run example:sessions`.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentServer, listenUnix } from '@rjob/agent';
import { connectSession, JobManager, openSession, unixSocketTransport } from '@rjob/core';

const dir = await mkdtemp(join(tmpdir(), 'rjob-sessions-'));
// The agent: usually the per-user daemon, here in-process.
const agent = new AgentServer({ stateDir: dir });
const door = await listenUnix(agent, { socketPath: join(dir, 'agent.sock') });
const local = new JobManager();
try {
  const s1 = await openSession(unixSocketTransport, door.socketPath, {
    name: 's1',
    computerName: 'localhost',
  });
  await s1.jobs.start({ definition: { command: 'ls /etc | head -3' } }, { name: 'audit' });
  await s1.jobs.wait('audit');
  console.log(
    'kept remote:',
    (await s1.jobs.receive('audit', { keep: true })).map((r) => r.data),
  );
  console.log(
    'still there:',
    (await s1.jobs.receive('audit')).map((r) => r.data),
  ); // consumed now

  for await (const record of s1.invoke({ definition: { command: 'uname -s' } })) {
    console.log(`[${record.computerName}]`, record.data);
  }

  await s1.jobs.start({ definition: { command: 'for i in 1 2 3; do sleep 0.2; echo "Output $i"; done' } });
  await s1.disconnect(); // the job keeps running on the agent
  const again = await connectSession(unixSocketTransport, door.socketPath, {
    sessionId: s1.sessionId!,
    resumeSecret: s1.resumeSecret!,
    computerName: 'localhost',
  });
  const jobs = await again.receive({ outTarget: 'job', jobManager: local });
  for (const record of await local.receive(jobs, { wait: true }))
    console.log('after reconnect:', record.data);
  await again.close();
} finally {
  await local.close();
  await door.close();
  await agent.close();
  await rm(dir, { recursive: true, force: true });
}
