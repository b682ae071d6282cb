// Core's fan-out (invokeMany) against real agents, one per target on core's in-memory network.
import { invokeMany, JobManager, type RemoteRecord, RjobError } from '@rjob/core';
import { createMemoryNetwork } from '@rjob/core/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { AgentHost, closeAgentHosts, quiet } from '../fixtures/agent-host.js';
import { scripted } from '../fixtures/scripted-job-type.js';
import { until } from '../fixtures/until.js';

afterEach(() => closeAgentHosts());

async function hosts(count: number, unreachable: ReadonlySet<string> = new Set()) {
  const network = createMemoryNetwork();
  const agents = new Map<string, AgentHost>();
  const names = Array.from({ length: count }, (_, i) => `host${i + 1}`);
  for (const name of names) {
    if (unreachable.has(name)) continue;
    agents.set(name, await AgentHost.start(network, name));
  }
  return { network, agents, names };
}

describe('invokeMany', () => {
  it('streams every target’s records tagged with its computer name; unreachable ones are coded errors', async () => {
    const { network, names } = await hosts(5, new Set(['host2', 'host4']));
    const invocation = invokeMany(undefined, names, scripted({ lines: 3 }), {
      transport: network.transport,
      sessionOptions: { channel: quiet },
    });
    const records: RemoteRecord[] = [];
    for await (const record of invocation) records.push(record);
    const results = await invocation.results;

    for (const name of ['host1', 'host3', 'host5']) {
      expect(records.filter((r) => r.computerName === name && !r.reason).map((r) => r.data)).toEqual([
        0, 1, 2,
      ]);
      expect(results.find((r) => r.computerName === name)?.info?.state).toBe('Completed');
    }
    for (const name of ['host2', 'host4']) {
      const result = results.find((r) => r.computerName === name)!;
      expect(result.error?.code).toBe('ERR_CONNECT_FAILED');
      const errorRecord = records.find((r) => r.computerName === name)!;
      expect(errorRecord).toMatchObject({ stream: 'error', reason: true });
      expect(RjobError.hasCode(errorRecord.data, 'ERR_CONNECT_FAILED')).toBe(true);
    }
  });

  it('asJob: one RemoteJob child per target; unreachable children fail with a coded reason, the parent Failed', async () => {
    const { network, names } = await hosts(5, new Set(['host2', 'host4']));
    const manager = new JobManager();
    const parent = invokeMany(manager, names, scripted({ lines: 2 }), {
      asJob: true,
      name: 'sys',
      transport: network.transport,
      sessionOptions: { channel: quiet },
    });
    expect(parent).toMatchObject({ name: 'sys', type: 'RemoteJob', location: names.join(',') });
    expect(parent.children.map((child) => child.location)).toEqual(names);
    await manager.wait(parent);
    expect(parent.state).toBe('Failed');
    expect(parent.reason?.code).toBe('ERR_CHILD_JOB_FAILED');
    const byName = new Map(parent.children.map((child) => [child.location, child]));
    for (const name of ['host2', 'host4']) {
      expect(byName.get(name)!.state).toBe('Failed');
      expect(byName.get(name)!.reason?.code).toBe('ERR_CONNECT_FAILED');
    }
    const records = await manager.receive(parent);
    const output = records.filter((r) => !r.reason);
    expect(output.length).toBe(6);
    for (const name of ['host1', 'host3', 'host5']) {
      expect(byName.get(name)!.state).toBe('Completed');
      expect(output.filter((r) => r.location === name).map((r) => r.data)).toEqual([0, 1]);
    }
    expect(
      records
        .filter((r) => r.reason)
        .map((r) => r.location)
        .sort(),
    ).toEqual(['host2', 'host4']);
  });

  it('never works on more than throttleLimit targets at once', async () => {
    const { network, names } = await hosts(7);
    let active = 0;
    let maxActive = 0;
    const invocation = invokeMany(undefined, names, scripted({ lines: 1 }), {
      transport: network.transport,
      sessionOptions: { channel: quiet },
      throttleLimit: 2,
      onRecord: async () => {
        // Hold each target's only record for a few turns, so overlapping targets would show.
        active++;
        maxActive = Math.max(maxActive, active);
        for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => setImmediate(resolve));
        active--;
      },
    });
    const results = await invocation.results;
    expect(results.every((r) => r.info?.state === 'Completed')).toBe(true);
    expect(maxActive).toBe(2);
    expect(network.links.length).toBe(7);
  });

  it('asJob honours throttleLimit: the rest wait in NotStarted', async () => {
    const { network, names, agents } = await hosts(4);
    const manager = new JobManager();
    const parent = invokeMany(manager, names, scripted({ lines: 1, gate: 'go' }), {
      asJob: true,
      transport: network.transport,
      sessionOptions: { channel: quiet },
      throttleLimit: 3,
    });
    await until(() => parent.children.filter((c) => c.state === 'Running').length >= 3);
    expect(parent.children.map((child) => child.state)).toEqual([
      'Running',
      'Running',
      'Running',
      'NotStarted',
    ]);
    for (const agent of agents.values()) agent.gates.open('go');
    await manager.wait(parent);
    expect(parent.state).toBe('Completed');
  });
});
