/**
 * Waits that an AbortSignal (Ctrl-C on a client) cuts short.
 *
 * Invariant: the promise given is observed whatever happens, and what it yields after the
 * signal won is handed to `discard` (a connection or a store that arrives too late is
 * disposed, never leaked).
 */

/** `p`, or a rejection with the signal's reason as soon as it aborts (at once if it has). */
export function abortable<T>(
  p: Promise<T>,
  signal: AbortSignal | undefined,
  options: { discard?: (late: T) => unknown } = {},
): Promise<T> {
  if (signal === undefined) return p;
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const onAbort = () => {
      settled = true;
      reject(signal.reason);
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
    p.then((value) => {
      signal.removeEventListener("abort", onAbort);
      if (!settled) {
        settled = true;
        resolve(value);
        return;
      }
      Promise.resolve().then(() => options.discard?.(value)).catch(() => {});
    }, (e) => {
      signal.removeEventListener("abort", onAbort);
      if (!settled) {
        settled = true;
        reject(e);
      }
    });
  });
}

/** Resolves after `ms`, or rejects with the signal's reason once it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise<void>((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
