/**
 * The engine's one scheduler, for both roles (a source's diff, a destination's digests):
 * items in file order → a job started for each, at most `lookahead` ahead of the one being
 * consumed → results consumed strictly in order by one consumer.
 *
 * Invariants:
 * - At most `lookahead` jobs exist that were not consumed yet; consume() may wait (that is
 *   the back-pressure) and no further job starts meanwhile.
 * - Every job is observed from the moment it exists: its failure surfaces when consumed;
 *   jobs started but never consumed (an earlier failure, an abort) are left to settle, and
 *   the caller's start() owns what they hold (see diffRange's reservations).
 * - start() returning undefined means "nothing to run" (a hole): consume gets undefined.
 */
export async function runInOrder<I, R>(
  items: readonly I[],
  o: {
    lookahead: number;
    signal: AbortSignal;
    start: (item: I) => Promise<R> | undefined;
    consume: (item: I, result: R | undefined) => Promise<void> | void;
  },
): Promise<void> {
  const lookahead = Math.max(1, o.lookahead);
  const jobs: (Promise<R> | undefined)[] = [];
  let started = 0;
  for (let i = 0; i < items.length; i++) {
    for (; started < items.length && started < i + lookahead; started++) {
      const job = o.start(items[started]);
      job?.catch(() => {}); // observed when consumed below
      jobs[started] = job;
    }
    o.signal.throwIfAborted();
    const job = jobs[i];
    jobs[i] = undefined;
    await o.consume(items[i], job === undefined ? undefined : await job);
  }
}
