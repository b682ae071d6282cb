/**
 * Jobs that wait for their turn (`rjob start --after ID… --group NAME`): a job with dependencies
 * waits in NotStarted until every one of them Completed, and fails with ERR_DEPENDENCY_FAILED as
 * soon as one Failed or was Stopped; a job in a group waits until fewer than the group's
 * `parallel` jobs of that group run. Ready jobs start in the order they were started.
 *
 * One queue per agent: groups are the agent's (kept in `<stateDir>/groups.json`), and a group's
 * limit counts its running jobs of every job table. What a waiting job waits for is kept in its
 * JobWork (the job store's `data`), so an agent restart puts it back in the queue (see
 * AgentSession.restoreJobs); the running jobs of a stopped agent have ended, so nothing counts
 * toward a limit after a restart but what the new agent starts.
 */
import { readFileSync } from 'node:fs';
import {
  ErrorCode,
  isTerminal,
  type Job,
  type JobContext,
  type JobGroupInfo,
  type JobManager,
  type JobRun,
  type JobType,
  RjobError,
  defineJobType,
  toRjobError,
} from '@rjob/core';
import { AgentErrorCode } from '../errors.js';
import { writeFileAtomic } from '../fs/atomic-file.js';
import { reportIncident } from '../incidents.js';
import type { JobWork } from './job-work.js';
import { invalidParams, objectParams, requiredString } from './wire.js';

/** The group of jobs started without `--group`: unlimited. */
export const DEFAULT_GROUP = 'default';
const GROUP_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const MAX_PARALLEL = 10_000;

type GroupInfo = JobGroupInfo;

interface Entry {
  job: Job;
  work: JobWork;
  group: string;
  /** Dependencies that have not Completed yet. */
  pending: Job[];
  state: 'waiting' | 'launched' | 'done';
  launch(): void;
  fail(reason: RjobError): void;
  off: Array<() => void>;
}

export class JobQueue {
  readonly #file: string | undefined;
  readonly #groups = new Map<string, number>();
  /** Waiting and launched jobs, in the order they were started. */
  #entries: Entry[] = [];
  #saving: Promise<void> = Promise.resolve();
  #closed = false;
  #pumping = false;
  #again = false;

  /** `file`: where groups are kept (absent: in memory only). */
  constructor(options: { file?: string } = {}) {
    this.#file = options.file;
    if (this.#file) this.#load(this.#file);
  }

  /** True while a process job may wait in the queue: not after {@link close}. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * The agent is shutting down: nothing starts or fails any more. Waiting jobs the shutdown stops
   * keep `work.waiting`, so the next agent puts them back in the queue.
   */
  close(): void {
    this.#closed = true;
  }

  // ---- groups ----------------------------------------------------------------------------------

  groups(): GroupInfo[] {
    const names = [DEFAULT_GROUP, ...[...this.#groups.keys()].sort()];
    return names.map((name) => {
      const members = this.#entries.filter((entry) => entry.group === name);
      return {
        name,
        parallel: this.#groups.get(name) ?? null,
        running: members.filter((entry) => entry.state === 'launched').length,
        waiting: members.filter((entry) => entry.state === 'waiting').length,
      };
    });
  }

  /** Throws ERR_GROUP_NOT_FOUND unless `name` is a group (the default one included). */
  checkGroup(name: string): void {
    if (name !== DEFAULT_GROUP && !this.#groups.has(name)) throw groupNotFound(name);
  }

  async addGroup(name: string, parallel: number): Promise<GroupInfo> {
    checkName(name);
    if (this.#groups.has(name)) {
      throw invalidParams(`Group ${name} exists already; change its limit with group set.`, { group: name });
    }
    this.#groups.set(name, checkParallel(parallel));
    await this.#save();
    return this.#info(name);
  }

  async setGroup(name: string, parallel: number): Promise<GroupInfo> {
    checkName(name);
    this.checkGroup(name);
    this.#groups.set(name, checkParallel(parallel));
    await this.#save();
    // A higher limit may let waiting jobs go now.
    this.pump();
    return this.#info(name);
  }

  async removeGroup(name: string): Promise<GroupInfo> {
    checkName(name);
    this.checkGroup(name);
    const info = this.#info(name);
    if (info.running + info.waiting > 0) {
      throw new RjobError(
        AgentErrorCode.GroupInUse,
        `Group ${name} has ${info.running} running and ${info.waiting} waiting jobs; it can be removed once they finished.`,
        { details: { group: name, running: info.running, waiting: info.waiting } },
      );
    }
    this.#groups.delete(name);
    await this.#save();
    return info;
  }

  #info(name: string): GroupInfo {
    return this.groups().find((group) => group.name === name)!;
  }

  // ---- waiting jobs ----------------------------------------------------------------------------

  /**
   * A job type that runs `inner` once the job's turn comes (its dependencies Completed, a slot
   * free in its group). Start the job with it: the job shows NotStarted until then. `deps` are the
   * jobs of `jobs` it waits for; `work.waiting` is true while it waits.
   */
  waitingType(inner: JobType, work: JobWork, deps: Job[], jobs: JobManager): JobType {
    return defineJobType({
      name: inner.name,
      ...(inner.aliases ? { aliases: inner.aliases } : {}),
      describe: (definition) => inner.describe(definition),
      start: (definition, context) => this.#admit(inner, definition, context, work, deps, jobs),
    });
  }

  #admit(
    inner: JobType,
    definition: unknown,
    context: JobContext,
    work: JobWork,
    deps: Job[],
    jobs: JobManager,
  ): JobRun {
    let innerRun: JobRun | undefined;
    let paused = false;
    let ended = false;
    const finish: JobContext['finish'] = (outcome) => {
      ended = true;
      context.finish(outcome);
    };
    const run: JobRun = {
      stop: () => {
        if (innerRun) return innerRun.stop();
        if (entry.state === 'waiting') this.#done(entry);
        // Stopped by the user, it waits no more; stopped by the agent's shutdown, it waits on in the
        // next agent.
        if (!this.#closed) work.waiting = false;
        finish({ state: 'Stopped' });
      },
      pause: () => {
        paused = true;
        innerRun?.pause?.();
      },
      resume: () => {
        paused = false;
        innerRun?.resume?.();
      },
    };
    const entry: Entry = {
      job: jobs.job(context.jobId),
      work,
      group: work.group ?? DEFAULT_GROUP,
      pending: [...deps],
      state: 'waiting',
      off: [],
      fail: (reason) => {
        work.waiting = false;
        finish({ state: 'Failed', reason });
      },
      launch: () => {
        work.waiting = false;
        void (async () => {
          try {
            innerRun = await inner.start(definition, context);
          } catch (error) {
            if (!ended) finish({ state: 'Failed', reason: toRjobError(error, ErrorCode.JobStartFailed) });
            return;
          }
          // What the inner run can do, the job can (suspend, input) from now on.
          for (const key of ['suspend', 'continue', 'write', 'endInput'] as const) {
            const method = innerRun[key] as ((...args: unknown[]) => unknown) | undefined;
            if (method) Object.assign(run, { [key]: (...args: unknown[]) => method.apply(innerRun, args) });
          }
          if (entry.job.stopRequested) void innerRun.stop();
          else if (paused) innerRun.pause?.();
        })();
      },
    };
    work.waiting = true;
    this.#entries.push(entry);
    entry.off.push(
      entry.job.onStateChange(({ state }) => {
        if (isTerminal(state)) {
          this.#done(entry);
          this.pump();
        }
      }),
    );
    for (const dep of deps) entry.off.push(dep.onStateChange(() => this.pump()));
    // Decided once the job is in its table (start has returned), so a job that can go at once
    // is no different from one that waited.
    queueMicrotask(() => this.pump());
    return run;
  }

  #done(entry: Entry): void {
    if (entry.state === 'done') return;
    entry.state = 'done';
    for (const off of entry.off) off();
    this.#entries = this.#entries.filter((each) => each !== entry);
  }

  /** Starts every waiting job whose turn has come; fails those whose dependencies failed. */
  pump(): void {
    if (this.#closed) return;
    if (this.#pumping) {
      this.#again = true;
      return;
    }
    this.#pumping = true;
    try {
      do {
        this.#again = false;
        this.#pass();
      } while (this.#again && !this.#closed);
    } finally {
      this.#pumping = false;
    }
  }

  #pass(): void {
    const running = new Map<string, number>();
    for (const entry of this.#entries) {
      if (entry.state === 'launched') running.set(entry.group, (running.get(entry.group) ?? 0) + 1);
    }
    for (const entry of [...this.#entries]) {
      if (entry.state !== 'waiting' || entry.job.stopRequested || entry.job.finished) continue;
      // A dependency removed while still waiting was stopped first, which failed this job; one
      // removed later had Completed. So only a finished dependency's state matters.
      const failed = entry.pending.find((dep) => dep.finished && dep.state !== 'Completed');
      if (failed) {
        this.#done(entry);
        entry.fail(dependencyFailed(entry.job, failed));
        continue;
      }
      entry.pending = entry.pending.filter((dep) => dep.state !== 'Completed');
      if (entry.pending.length > 0) continue;
      const limit = this.#groups.get(entry.group) ?? Number.POSITIVE_INFINITY;
      const busy = running.get(entry.group) ?? 0;
      if (busy >= limit) continue;
      running.set(entry.group, busy + 1);
      entry.state = 'launched';
      entry.launch();
    }
  }

  // ---- persistence -----------------------------------------------------------------------------

  #load(file: string): void {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      return; // No groups yet.
    }
    try {
      const parsed = JSON.parse(text) as { groups?: Record<string, unknown> };
      for (const [name, parallel] of Object.entries(parsed.groups ?? {})) {
        if (GROUP_NAME.test(name) && name !== DEFAULT_GROUP && isParallel(parallel)) {
          this.#groups.set(name, parallel);
        }
      }
    } catch {
      reportIncident({
        kind: 'damaged',
        code: AgentErrorCode.StateDamaged,
        subject: `groups file ${file}`,
        detail: 'unreadable; starting without groups',
      });
    }
  }

  #save(): Promise<void> {
    const file = this.#file;
    if (!file) return Promise.resolve();
    const groups = Object.fromEntries([...this.#groups.entries()].sort());
    const bytes = Buffer.from(`${JSON.stringify({ groups }, null, 2)}\n`);
    // In call order: the last change is the one on disk.
    const saving = this.#saving.then(() => writeFileAtomic(file, bytes));
    this.#saving = saving.catch(() => {});
    return saving;
  }
}

/** `group.add` / `group.set` / `group.remove` / `group.list` (see rpc.ts). */
export function groupCall(queue: JobQueue, method: string, params: unknown): Promise<unknown> | unknown {
  if (method === 'group.list') return queue.groups();
  const p = objectParams(params, method);
  const name = requiredString(p, 'name', 64);
  if (method === 'group.remove') return queue.removeGroup(name);
  const parallel = p.parallel;
  if (!isParallel(parallel)) {
    throw invalidParams(`${method} needs parallel, a whole number from 1 to ${MAX_PARALLEL}.`, { parallel });
  }
  return method === 'group.add' ? queue.addGroup(name, parallel) : queue.setGroup(name, parallel);
}

function isParallel(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 1 && value <= MAX_PARALLEL;
}

function checkParallel(value: number): number {
  if (!isParallel(value)) throw invalidParams(`parallel must be a whole number from 1 to ${MAX_PARALLEL}.`);
  return value;
}

function checkName(name: string): void {
  if (name === DEFAULT_GROUP) {
    throw invalidParams(`The ${DEFAULT_GROUP} group is unlimited and cannot be changed.`, { group: name });
  }
  if (!GROUP_NAME.test(name)) {
    throw invalidParams(
      `A group name is letters, digits, '.', '_' and '-' (at most 64, starting with a letter or digit), not ${JSON.stringify(name)}.`,
      { group: name },
    );
  }
}

function groupNotFound(name: string): RjobError {
  return new RjobError(AgentErrorCode.GroupNotFound, `No group named ${name} (see rjob group list).`, {
    details: { group: name },
  });
}

function dependencyFailed(job: Job, dep: Job): RjobError {
  return new RjobError(
    AgentErrorCode.DependencyFailed,
    `Job ${job.id} (${job.name}) did not start: job ${dep.id} (${dep.name}) it waits for is ${dep.state}.`,
    { details: { jobId: job.id, dependencyId: dep.id, dependencyState: dep.state } },
  );
}
