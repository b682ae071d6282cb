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

  /** @param highWaterMark queued items above which `push` asks the producer to wait. */
  constructor(highWaterMark = 1024) {
    this.#highWaterMark = Math.max(1, highWaterMark);
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

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    if (this.#iterating) throw new Error('A record stream can be iterated only once.');
    this.#iterating = true;
    try {
      for (;;) {
        if (this.length > 0) {
          const item = this.#items[this.#head]!;
          this.#items[this.#head++] = undefined as T;
          if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
            this.#items = this.#items.slice(this.#head);
            this.#head = 0;
          }
          if (this.length < this.#highWaterMark / 2 || this.length === 0) this.#releaseSpace();
          yield item;
          continue;
        }
        this.#releaseSpace();
        if (this.#ended) {
          if (this.#failed) throw this.#error;
          return;
        }
        await new Promise<void>((resolve) => {
          this.#wakeConsumer = resolve;
        });
      }
    } finally {
      // A consumer that stops early must not leave the producer (and the channel) blocked.
      this.#ended = true;
      this.#items = [];
      this.#head = 0;
      this.#releaseSpace();
    }
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
