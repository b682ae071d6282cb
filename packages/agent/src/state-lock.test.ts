import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RjobError } from '@rjob/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AgentServer } from './server/agent-server.js';
import { STATE_LOCK_FILE } from './state-dir.js';
import { lockStateDir, type StateDirLock } from './state-lock.js';

let dir: string;
const locks: StateDirLock[] = [];
const servers: AgentServer[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rjob-lock-'));
});

afterEach(async () => {
  for (const server of servers.splice(0)) await server.close();
  for (const lock of locks.splice(0)) await lock.release();
  await rm(dir, { recursive: true, force: true });
});

/** The pid of a process that has exited (and been reaped). */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '']);
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid!;
}

async function refusal(promise: Promise<unknown>): Promise<RjobError> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  if (!RjobError.is(error)) throw new Error(`expected an RjobError, got ${String(error)}`);
  return error;
}

describe('the state directory lock', () => {
  it('holds the pid; a second holder is refused with ERR_AGENT_RUNNING naming it; release frees it', async () => {
    const lock = await lockStateDir(dir);
    locks.push(lock);
    expect((await readFile(join(dir, STATE_LOCK_FILE), 'utf8')).split('\n')[0]).toBe(String(process.pid));

    const refused = await refusal(lockStateDir(dir));
    expect(refused.code).toBe('ERR_AGENT_RUNNING');
    expect(refused.message).toContain(`pid ${process.pid}`);
    expect(refused.details).toMatchObject({ pid: process.pid, stateDir: dir });

    await lock.release();
    locks.push(await lockStateDir(dir));
    // Nothing is left beside the lock (no files written aside, no breakers).
    expect(await readdir(dir)).toEqual([STATE_LOCK_FILE]);
  });

  it('takes over a lock whose holder is dead, or is a later process given the same pid', async () => {
    await writeFile(join(dir, STATE_LOCK_FILE), `${await deadPid()}\n\nabc\n`);
    const lock = await lockStateDir(dir);
    locks.push(lock);
    expect((await readFile(lock.file, 'utf8')).split('\n')[0]).toBe(String(process.pid));
    await lock.release();

    // This process's pid, but another process's start time (a lock from before a reboot).
    await writeFile(join(dir, STATE_LOCK_FILE), `${process.pid}\nother-boot:1\nabc\n`);
    if (process.platform === 'linux') locks.push(await lockStateDir(dir));
    else expect((await refusal(lockStateDir(dir))).code).toBe('ERR_AGENT_RUNNING');
  });

  it('gives a stale lock to exactly one of many racing starts', async () => {
    await writeFile(join(dir, STATE_LOCK_FILE), `${await deadPid()}\n\nstale\n`);
    const results = await Promise.allSettled(Array.from({ length: 12 }, () => lockStateDir(dir)));
    const won = results.filter((result) => result.status === 'fulfilled');
    expect(won).toHaveLength(1);
    locks.push(won[0]!.value);
    for (const result of results) {
      if (result.status === 'rejected') expect((result.reason as RjobError).code).toBe('ERR_AGENT_RUNNING');
    }
    expect(await readdir(dir)).toEqual([STATE_LOCK_FILE]);
  });
});

describe('AgentServer and its state directory', () => {
  it('a second agent on the same directory is refused before it loads anything; the first keeps it', async () => {
    const first = new AgentServer({ stateDir: dir });
    servers.push(first);
    await first.ready();
    const second = new AgentServer({ stateDir: dir });
    servers.push(second);
    const refused = await refusal(second.ready());
    expect(refused.code).toBe('ERR_AGENT_RUNNING');
    expect((await refusal(second.restore())).code).toBe('ERR_AGENT_RUNNING');
    await second.close();
    // The refused agent's close did not take the first one's lock away.
    expect((await refusal(lockStateDir(dir))).code).toBe('ERR_AGENT_RUNNING');
    await first.close();
    const third = new AgentServer({ stateDir: dir });
    servers.push(third);
    await third.ready();
  });

  it('an agent without persist takes no lock', async () => {
    const holder = new AgentServer({ stateDir: dir });
    servers.push(holder);
    await holder.ready();
    const memory = new AgentServer({ stateDir: dir, persist: false });
    servers.push(memory);
    await memory.ready();
  });
});
