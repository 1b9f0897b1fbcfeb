/**
 * Structured concurrency for one session (restic's errgroup): tasks run with a bound on how
 * many are active; the first failure aborts the group's signal, later failures are dropped,
 * and wait() rethrows the first one.
 *
 * Invariant: a task's own rejection is always observed (it fails the group). spawn() may wait
 * for a slot and then throw instead of calling `fn` (the group failed meanwhile): whatever
 * the caller started for that task before spawn() must already be observed by the caller.
 */
export class TaskGroup {
  readonly controller: AbortController;
  #active = new Set<Promise<void>>();
  #limit: number;
  #error: unknown;
  #failed = false;

  constructor(options: { limit: number; controller?: AbortController }) {
    this.#limit = options.limit;
    this.controller = options.controller ?? new AbortController();
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /**
   * Starts fn once fewer than `limit` tasks are active (back-pressure on the caller); throws
   * the group's failure instead, without calling fn, once the group has failed.
   */
  async spawn(fn: () => Promise<void>): Promise<void> {
    while (this.#active.size >= this.#limit) await Promise.race(this.#active);
    this.throwIfFailed();
    const p: Promise<void> = fn()
      .catch((e) => this.fail(e))
      .finally(() => this.#active.delete(p));
    this.#active.add(p);
  }

  /** Records the first error and aborts the group. */
  fail(e: unknown): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#error = e;
    this.controller.abort(e);
  }

  throwIfFailed(): void {
    if (this.#failed) throw this.#error;
    if (this.signal.aborted) throw this.signal.reason;
  }

  /** Waits for every task; rethrows the first failure. */
  async wait(): Promise<void> {
    while (this.#active.size > 0) await Promise.race(this.#active);
    this.throwIfFailed();
  }
}
