/**
 * `--wait SECONDS`: a writer that finds its destination busy (another ssync's session holds
 * its lock, most often one that is ending: a killed client's, whose listener lets go within
 * a fraction of a second) waits for it, then fails saying what holds it and how long it
 * waited.
 *
 * - Local stores wait inside storage (openDestination's and openSource's `lockWaitMs`);
 *   busyAfterWait() states the wait and the option in an EBUSY that still comes.
 * - A listener waits a little itself (LOCK_WAIT_MS), then answers OPEN with ERROR EBUSY:
 *   retryWhileBusy() opens a new session after 100, 200, 400, 800, then every 1000 ms,
 *   until `waitMs` have passed since the first try. Each try is a handshake, which the
 *   listener rate-limits per address (a bucket of 8 refilled at 2/s, refunded to a session
 *   it serves, as a busy one is): at most one try a second after the first five.
 */
import { ErrnoError, RemoteError } from "../util/errors.ts";
import { sleep } from "../util/abortable.ts";

const BACKOFF_MS = [100, 200, 400, 800, 1000];

export function isBusy(e: unknown): e is ErrnoError {
  return e instanceof ErrnoError && e.code === "EBUSY";
}

/**
 * The EBUSY error `e` saying it was waited for `waitedMs` and how to wait longer, in place
 * of any wait it stated already; a RemoteError stays one.
 */
export function busyAfterWait(e: ErrnoError, waitedMs: number): ErrnoError {
  const reason = e.message.replace(/; waited [\d.]+ s$/, "");
  const message = `${reason}; waited ${Math.round(waitedMs / 100) / 10} s (--wait SECONDS waits longer)`;
  return e instanceof RemoteError ? new RemoteError("EBUSY", message) : new ErrnoError("EBUSY", message, { cause: e });
}

/**
 * Runs `attempt(0)`, and again while it fails with a listener's EBUSY (a RemoteError) and
 * `waitMs` have not passed since the first try began; then throws that EBUSY, saying how
 * long it waited in all. Bounded: at most 5 + waitMs / 1000 tries. The signal cuts a pause
 * short.
 */
export async function retryWhileBusy<T>(
  attempt: (n: number) => Promise<T>,
  options: { waitMs: number; signal?: AbortSignal },
): Promise<T> {
  const started = performance.now();
  for (let n = 0;; n++) {
    try {
      return await attempt(n);
    } catch (e) {
      if (!(e instanceof RemoteError) || e.code !== "EBUSY") throw e;
      const waited = performance.now() - started;
      const left = options.waitMs - waited;
      if (left <= 0) throw busyAfterWait(e, waited);
      await sleep(Math.min(BACKOFF_MS[Math.min(n, BACKOFF_MS.length - 1)], left), options.signal);
    }
  }
}
