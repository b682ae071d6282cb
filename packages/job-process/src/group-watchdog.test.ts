import { type ChildProcess, spawn } from 'node:child_process';
import { afterEach, expect, it } from 'vitest';
import { GroupWatchdog } from './group-watchdog.js';
import { eventually, isAlive, killAll, watchdogPids } from './test-utils.js';

const children: ChildProcess[] = [];
const watchdogs: GroupWatchdog[] = [];

afterEach(async () => {
  await Promise.all(watchdogs.splice(0).map((w) => w.dispose()));
  killAll(children.splice(0).map((c) => c.pid!));
});

/** A `sleep` leading its own process group, as a job's child does. */
function group(): number {
  const child = spawn('sleep', ['1000'], { detached: true, stdio: 'ignore' });
  children.push(child);
  return child.pid!;
}

function watchdog(graceMs = 500): GroupWatchdog {
  const w = new GroupWatchdog(graceMs);
  watchdogs.push(w);
  return w;
}

it('kills the groups still registered when disposed, and only those', async () => {
  const w = watchdog();
  const kept = group();
  const forgotten = group();
  w.register(kept);
  w.register(forgotten);
  w.unregister(forgotten);
  await w.dispose();
  await eventually(() => !isAlive(kept), 'the registered group to die');
  expect(isAlive(forgotten)).toBe(true);
  expect(watchdogPids()).toEqual([]);
});

it('starts nothing until a group is registered', async () => {
  watchdog();
  expect(watchdogPids()).toEqual([]);
});

it('keeps the registry right over many registrations (compaction)', async () => {
  const w = watchdog();
  const churn = group();
  for (let i = 0; i < 10_000; i++) {
    w.register(churn);
    w.unregister(churn);
  }
  const last = group();
  w.register(last);
  await w.dispose();
  await eventually(() => !isAlive(last), 'the registered group to die');
  expect(isAlive(churn)).toBe(true);
});

it('replaces a watchdog that was killed and tells it every live group', async () => {
  const w = watchdog();
  const pgid = group();
  const bornMs = Date.now();
  w.register(pgid);
  const [first] = watchdogPids();
  expect(first).toBeGreaterThan(0);
  // A watchdog that dies young is not replaced at once (it might die again); age it first.
  await eventually(() => Date.now() - bornMs > 1100, 'the watchdog to age');
  process.kill(first!, 'SIGKILL');
  await eventually(() => {
    const now = watchdogPids();
    return now.length === 1 && now[0] !== first;
  }, 'a replacement watchdog');
  await w.dispose();
  await eventually(() => !isAlive(pgid), 'the group to die through the replacement');
});
