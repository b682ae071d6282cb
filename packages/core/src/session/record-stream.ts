/**
 * A single-consumer async queue with a high-water mark. `push` returns a promise while the queue
 * is full; the session's channel handler awaits it, so a slow consumer stops the channel from
 * granting credit and the agent stops sending, instead of this queue growing without bound.
 */
export class RecordStream<T> implements AsyncIterable<T> {
  readonly #highWaterMark: number;
  #items: T[] = [];
  #head = 0;
  #ended = false;
  #error: unknown;
  #failed = false;
  #wakeConsumer: (() => void) | undefined;
  #spaceWaiters: Array<() => void> = [];
  #iterating = false;
  readonly #onTake: ((item: T) => void) | undefined;
  readonly #onStop: (() => void | Promise<void>) | undefined;
  readonly #onDone: (() => void) | undefined;

  /**
   * @param highWaterMark queued items above which `push` asks the producer to wait.
   * @param hooks `onTake`: an item was handed to the consumer (it has it now); `onStop`: the
   *   consumer stopped early (`return()`, a `break` out of `for await`; a promise it returns is
   *   waited for before the loop goes on); `onDone`: the consumer got the end (after the last
   *   item, or the error).
   */
  constructor(
    highWaterMark = 1024,
    hooks: { onTake?(item: T): void; onStop?(): void | Promise<void>; onDone?(): void } = {},
  ) {
    this.#highWaterMark = Math.max(1, highWaterMark);
    this.#onTake = hooks.onTake;
    this.#onStop = hooks.onStop;
    this.#onDone = hooks.onDone;
  }

  get length(): number {
    return this.#items.length - this.#head;
  }

  push(item: T): void | Promise<void> {
    if (this.#ended) return;
    this.#items.push(item);
    this.#wake();
    if (this.length < this.#highWaterMark) return;
    return new Promise((resolve) => this.#spaceWaiters.push(resolve));
  }

  end(): void {
    this.#ended = true;
    this.#wake();
  }

  fail(error: unknown): void {
    if (this.#ended) return;
    this.#failed = true;
    this.#error = error;
    this.end();
  }

  /**
   * Written by hand rather than as an async generator: a generator costs a resumption and a few
   * promises per item, which shows at hundreds of thousands of records a second; here an item
   * that is already queued is one resolved promise.
   */
  [Symbol.asyncIterator](): AsyncIterator<T> {
    if (this.#iterating) throw new Error('A record stream can be iterated only once.');
    this.#iterating = true;
    return {
      next: () => this.#next(),
      return: (value?: unknown) => {
        // A consumer that stops early must not leave the producer (and the channel) blocked.
        const early = !this.#ended || this.length > 0;
        this.#stop();
        const done = { value: value as T, done: true as const };
        // `for await` waits for this before going on past a `break`: by then the stop is done.
        const stopped = early ? this.#onStop?.() : undefined;
        return stopped ? stopped.then(() => done) : Promise.resolve(done);
      },
    };
  }

  #next(): Promise<IteratorResult<T>> {
    if (this.length > 0) {
      const item = this.#items[this.#head]!;
      this.#items[this.#head++] = undefined as T;
      if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
        this.#items = this.#items.slice(this.#head);
        this.#head = 0;
      }
      if (this.length < this.#highWaterMark / 2 || this.length === 0) this.#releaseSpace();
      this.#onTake?.(item);
      return Promise.resolve({ value: item, done: false });
    }
    this.#releaseSpace();
    if (this.#ended) {
      const failed = this.#failed;
      // The error is thrown once; the iteration is over after it, as after the end.
      this.#failed = false;
      this.#stop();
      this.#onDone?.();
      return failed ? Promise.reject(this.#error) : Promise.resolve({ value: undefined as T, done: true });
    }
    return new Promise<void>((resolve) => {
      this.#wakeConsumer = resolve;
    }).then(() => this.#next());
  }

  #stop(): void {
    this.#ended = true;
    this.#items = [];
    this.#head = 0;
    this.#releaseSpace();
  }

  #wake(): void {
    const wake = this.#wakeConsumer;
    this.#wakeConsumer = undefined;
    wake?.();
  }

  #releaseSpace(): void {
    const waiters = this.#spaceWaiters;
    this.#spaceWaiters = [];
    for (const resolve of waiters) resolve();
  }
}
