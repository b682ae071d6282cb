/**
 * A minimal agent for the session client's unit tests: serverHandshake + ReliableChannel and a
 * handful of scripted methods. It is not the agent (that is @rjob/agent); it only plays the
 * server's part of rpc.ts well enough to exercise the client. Jobs are scripted: a definition
 * `{ lines, fail?, gate? }` writes `lines` numbered output records (after `gate` is opened).
 */
import { randomUUID } from 'node:crypto';
import { encodeRecordEntries, encodeRecordRuns } from '../codec/record-entries.js';
import { ErrorCode, RjobError, serializeError } from '../errors.js';
import { ProtocolErrorCode } from '../protocol/protocol-errors.js';
import type { JobRecord } from '../job/records.js';
import type { JobState } from '../job/states.js';
import { serverHandshake } from '../protocol/handshake.js';
import type { SequencedMessage } from '../protocol/messages.js';
import {
  ReliableChannel,
  type ReliableChannelOptions,
  type TakeoverEvent,
} from '../protocol/reliable-channel.js';
import type { MemoryLink, MemoryNetwork } from '../testing/memory-transport.js';
import type { TransportChannel } from '../transport/transport.js';
import type { JobInfo, SessionInfo, WireSelector } from './rpc.js';

export interface ScriptedWork {
  /** Output records 0 … lines−1. */
  lines?: number;
  /** Fail with this code after the lines. */
  fail?: string;
  /** Hold the job until {@link TestAgent.open} is called with this name. */
  gate?: string;
  /** After the first lines, wait for another gate and write more (numbering goes on). */
  more?: { lines: number; gate: string };
}

interface StubJob {
  info: JobInfo;
  buffer: JobRecord[];
  wake: Set<() => void>;
  stopped: boolean;
}

interface StubSubscription {
  id: string;
  jobs: StubJob[];
  keep: boolean;
  cancelled: boolean;
  /** Records sent as events and not yet acknowledged, with the event's sequence number. */
  unacked: Array<{ seq: number; job: StubJob; record: JobRecord }>;
}

interface StubSession {
  sessionId: string;
  resumeSecret: string;
  channel: ReliableChannel;
  jobs: Map<number, StubJob>;
  subscriptions: Map<string, StubSubscription>;
  /** Every subscription that may still have unacknowledged records, ended or not. */
  streams: StubSubscription[];
  nextJobId: number;
  disconnected: boolean;
}

export type MethodHandler = (params: any, session: StubSession) => unknown;

export interface TestAgentOptions {
  channel?: ReliableChannelOptions;
  /** Extra or replacing methods. */
  methods?: Record<string, MethodHandler>;
}

export class TestAgent {
  readonly sessions = new Map<string, StubSession>();
  /** Called after each record event is handed to a channel, with the running count. */
  onRecordSent: ((count: number) => void) | undefined;
  /** Called when a link finished its handshake. */
  onAttached: ((link: MemoryLink | undefined, resumed: boolean) => void) | undefined;
  recordsSent = 0;
  /** Requests per method, for tests that count calls. */
  readonly calls = new Map<string, number>();
  readonly #gates = new Map<string, { open: boolean; waiters: Array<() => void> }>();
  readonly #options: TestAgentOptions;

  constructor(options: TestAgentOptions = {}) {
    this.#options = options;
  }

  /** Listens on `address` of a memory network; returns the function that stops listening. */
  listen(network: MemoryNetwork, address: string): () => void {
    return network.listen(address, (channel, link) => this.accept(channel, link));
  }

  accept(link: TransportChannel, memoryLink?: MemoryLink): void {
    serverHandshake(link, {
      open: () => {
        const session: StubSession = {
          sessionId: randomUUID(),
          resumeSecret: randomUUID(),
          channel: this.#newChannel(),
          jobs: new Map(),
          subscriptions: new Map(),
          streams: [],
          nextJobId: 1,
          disconnected: false,
        };
        this.sessions.set(session.sessionId, session);
        this.#serve(session);
        return session;
      },
      resume: ({ sessionId, resumeSecret }) => {
        const session = this.sessions.get(sessionId);
        if (!session || session.resumeSecret !== resumeSecret) {
          throw new RjobError(ProtocolErrorCode.SessionNotFound, 'No such session.');
        }
        // A takeover swaps the channel through the onTakeover hook registered in #serve.
        session.disconnected = false;
        return session.channel;
      },
    }).then(
      (result) => this.onAttached?.(memoryLink, result.resumed),
      () => {},
    );
  }

  /** Opens a gate named in a scripted job. */
  open(gate: string): void {
    const g = this.#gate(gate);
    g.open = true;
    for (const wake of g.waiters.splice(0)) wake();
  }

  /** Forgets a session, so that resuming it is refused. */
  forget(sessionId: string): void {
    const session = this.sessions.get(sessionId);
    this.sessions.delete(sessionId);
    session?.channel.detach('Session forgotten.');
  }

  // ---------------------------------------------------------------------------------------------

  #newChannel(): ReliableChannel {
    const channel = new ReliableChannel({
      pingIntervalMs: 0,
      heartbeatTimeoutMs: 0,
      ...this.#options.channel,
    });
    return channel;
  }

  /**
   * A new client object took the session over: records its predecessor never acknowledged go back
   * to their jobs (the new client subscribes again), and the session continues on the successor
   * channel. The old channel closes right after this returns, which ends the old streams.
   */
  #adopt(session: StubSession, event: TakeoverEvent): void {
    for (const subscription of session.streams) {
      subscription.cancelled = true;
      // A `keep` stream only read through a cursor; the records never left the buffer.
      if (!subscription.keep) {
        const lost = subscription.unacked.filter((entry) => entry.seq > event.ackedSeq);
        for (const entry of lost.reverse()) entry.job.buffer.unshift(entry.record);
      }
      for (const job of subscription.jobs) wakeJob(job);
    }
    session.subscriptions.clear();
    session.streams = [];
    session.channel = event.channel;
    this.#serve(session);
  }

  #serve(session: StubSession): void {
    const channel = session.channel;
    channel.onTakeover((event) => this.#adopt(session, event));
    channel.onMessage(async (message: SequencedMessage) => {
      if (message.type !== 'request') return;
      this.calls.set(message.method, (this.calls.get(message.method) ?? 0) + 1);
      const respond = (result: unknown, error?: unknown): void => {
        if (channel.state === 'closed') return;
        channel.send(
          error === undefined
            ? { type: 'response', id: message.id, ...(result === undefined ? {} : { result }) }
            : { type: 'response', id: message.id, error: serializeError(error) },
        );
      };
      const handler = this.#options.methods?.[message.method] ?? this.#methods[message.method];
      if (!handler) {
        respond(undefined, new RjobError(ProtocolErrorCode.UnknownMethod, `No method ${message.method}.`));
        return;
      }
      // Methods run concurrently, as on a real agent: a slow invoke must not hold up the channel.
      void (async () => {
        try {
          respond(await handler(message.params, session));
        } catch (error) {
          respond(undefined, error);
        }
      })();
    });
  }

  readonly #methods: Record<string, MethodHandler> = {
    'session.info': (_params, session) => this.#info(session),
    'session.configure': (_params, session) => this.#info(session),
    'session.list': () => [...this.sessions.values()].map((s) => this.#info(s)),
    'session.disconnect': (_params, session) => {
      session.disconnected = true;
      return this.#info(session);
    },
    'session.close': (_params, session) => {
      this.sessions.delete(session.sessionId);
      setImmediate(() => session.channel.close('Session closed.'));
      return undefined;
    },
    'job.start': (params: { definition: ScriptedWork; name?: string }, session) =>
      this.#startJob(session, params.definition, params.name).info,
    'job.get': (params: { ids?: number[]; names?: string[] }, session) =>
      [...session.jobs.values()]
        .filter((job) => !params?.ids || params.ids.includes(job.info.id))
        .filter((job) => !params?.names || params.names.includes(job.info.name))
        .map((job) => this.#jobInfo(job)),
    'job.receive': (params: { selector: WireSelector; keep?: boolean }, session) => ({
      entries: encodeRecordRuns(
        this.#select(session, params.selector).flatMap((job) =>
          params.keep ? [...job.buffer] : job.buffer.splice(0),
        ),
      ),
    }),
    'job.wait': async (params: { selector: WireSelector }, session) => {
      const jobs = this.#select(session, params.selector);
      while (!jobs.every((job) => isDone(job.info.state))) {
        await new Promise<void>((resolve) => {
          for (const job of jobs) job.wake.add(resolve);
        });
      }
      return jobs.map((job) => this.#jobInfo(job));
    },
    'job.stop': (params: { selector: WireSelector }, session) =>
      this.#select(session, params.selector).map((job) => {
        job.stopped = true;
        wakeJob(job);
        return this.#jobInfo(job);
      }),
    'job.remove': (params: { selector: WireSelector }, session) =>
      this.#select(session, params.selector).map((job) => {
        session.jobs.delete(job.info.id);
        return this.#jobInfo(job);
      }),
    'job.subscribe': (
      params: { selector: WireSelector; subscriptionId: string; keep?: boolean },
      session,
    ) => {
      const jobs = this.#select(session, params.selector);
      this.#stream(session, params.subscriptionId, jobs, params.keep ?? false);
      return jobs.map((job) => this.#jobInfo(job));
    },
    'job.unsubscribe': (params: { subscriptionId: string }, session) => {
      const subscription = session.subscriptions.get(params.subscriptionId);
      if (subscription) subscription.cancelled = true;
      session.subscriptions.delete(params.subscriptionId);
      return undefined;
    },
    invoke: async (params: { definition: ScriptedWork; subscriptionId: string }, session) => {
      const job = this.#startJob(session, params.definition, undefined);
      await this.#stream(session, params.subscriptionId, [job], false);
      session.jobs.delete(job.info.id);
      return this.#jobInfo(job);
    },
  };

  #info(session: StubSession): SessionInfo {
    return {
      sessionId: session.sessionId,
      name: 'stub',
      computerName: 'stub-host',
      state: session.disconnected ? 'Disconnected' : 'Opened',
      availability: 'Available',
      cwd: '/',
      createdAtMs: 0,
      lastSeenAtMs: 0,
      runningJobs: [...session.jobs.values()].filter((job) => !isDone(job.info.state)).length,
    };
  }

  #jobInfo(job: StubJob): JobInfo {
    return { ...job.info, hasMoreData: job.buffer.length > 0 || !isDone(job.info.state) };
  }

  #select(session: StubSession, selector: WireSelector): StubJob[] {
    const items = Array.isArray(selector) ? selector : [selector];
    const out: StubJob[] = [];
    for (const item of items) {
      const job =
        typeof item === 'number' || /^\d+$/.test(item)
          ? session.jobs.get(Number(item))
          : [...session.jobs.values()].find((j) => j.info.name === item);
      if (!job) throw new RjobError(ErrorCode.JobNotFound, `No job matches "${item}".`);
      out.push(job);
    }
    return out;
  }

  #gate(name: string): { open: boolean; waiters: Array<() => void> } {
    let gate = this.#gates.get(name);
    if (!gate) this.#gates.set(name, (gate = { open: false, waiters: [] }));
    return gate;
  }

  async #wait(job: StubJob, name: string): Promise<void> {
    const gate = this.#gate(name);
    while (!gate.open && !job.stopped) {
      await new Promise<void>((resolve) => {
        gate.waiters.push(resolve);
        job.wake.add(resolve);
      });
    }
  }

  #startJob(session: StubSession, work: ScriptedWork, name: string | undefined): StubJob {
    const id = session.nextJobId++;
    const job: StubJob = {
      info: {
        id,
        instanceId: randomUUID(),
        name: name ?? `Job${id}`,
        type: 'StubJob',
        state: 'Running',
        hasMoreData: true,
        location: 'localhost',
        command: `lines ${work.lines ?? 0}`,
        beginTimeMs: Date.now(),
        childIds: [],
      },
      buffer: [],
      wake: new Set(),
      stopped: false,
    };
    session.jobs.set(id, job);
    void (async () => {
      const push = (n: number): void => {
        job.buffer.push({
          stream: 'output',
          data: n,
          seq: n + 1,
          timeMs: Date.now(),
          jobId: id,
          location: 'localhost',
        });
      };
      if (work.gate) await this.#wait(job, work.gate);
      const lines = work.lines ?? 0;
      for (let i = 0; i < lines && !job.stopped; i++) push(i);
      if (work.more && !job.stopped) {
        await this.#wait(job, work.more.gate);
        for (let i = 0; i < work.more.lines && !job.stopped; i++) push(lines + i);
        wakeJob(job);
      }
      let state: JobState = job.stopped ? 'Stopped' : work.fail ? 'Failed' : 'Completed';
      if (job.stopped) state = 'Stopped';
      job.info.state = state;
      job.info.endTimeMs = Date.now();
      if (state === 'Failed')
        job.info.reason = serializeError(new RjobError(work.fail!, 'Scripted failure.'));
      wakeJob(job);
    })();
    return job;
  }

  async #stream(session: StubSession, subscriptionId: string, jobs: StubJob[], keep: boolean): Promise<void> {
    const subscription: StubSubscription = { id: subscriptionId, jobs, keep, cancelled: false, unacked: [] };
    session.subscriptions.set(subscriptionId, subscription);
    session.streams.push(subscription);
    const channel = session.channel;
    // Let the subscribe response go first, as the agent answers at once.
    await new Promise<void>((resolve) => setImmediate(resolve));
    const cursors = new Map(jobs.map((job) => [job, 0]));
    for (;;) {
      if (subscription.cancelled || channel.state === 'closed') return;
      let progressed = false;
      for (const job of jobs) {
        for (;;) {
          if (subscription.cancelled) return;
          const record = keep ? job.buffer[cursors.get(job)!] : job.buffer.shift();
          if (!record) break;
          if (keep) cursors.set(job, cursors.get(job)! + 1);
          progressed = true;
          const accepted = channel.send({
            type: 'event',
            name: 'job.packed',
            data: { subscriptionId, entries: encodeRecordEntries([record], record.seq) },
          });
          subscription.unacked.push({ seq: channel.sentSeq, job, record });
          if (subscription.unacked.length > 4096) {
            const acked = channel.ackedSeq;
            subscription.unacked = subscription.unacked.filter((entry) => entry.seq > acked);
          }
          this.recordsSent++;
          this.onRecordSent?.(this.recordsSent);
          if (!accepted) {
            try {
              await channel.drain();
            } catch {
              return;
            }
          }
        }
      }
      const done = jobs.every((job) => isDone(job.info.state) && (keep || job.buffer.length === 0));
      if (done) {
        session.subscriptions.delete(subscriptionId);
        channel.send({
          type: 'event',
          name: 'job.end',
          data: { subscriptionId, jobs: jobs.map((job) => this.#jobInfo(job)) },
        });
        return;
      }
      if (!progressed) {
        await new Promise<void>((resolve) => {
          for (const job of jobs) job.wake.add(resolve);
        });
      }
    }
  }
}

function wakeJob(job: StubJob): void {
  const waiters = [...job.wake];
  job.wake.clear();
  for (const wake of waiters) wake();
}

function isDone(state: JobState): boolean {
  return state === 'Completed' || state === 'Failed' || state === 'Stopped';
}
