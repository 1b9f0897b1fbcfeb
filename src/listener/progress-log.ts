/**
 * The listener's line per running session every `intervalMs` (default a minute): how far it
 * is, at what rate since the last line. A session that ends before its first interval logs
 * only its summary line.
 */
import { clearInterval, setInterval } from "node:timers";
import type { SessionProgress } from "../session/session-progress.ts";
import { formatBytes } from "../util/format-bytes.ts";

/** `ssync listen --progress-interval`'s default. */
export const DEFAULT_PROGRESS_INTERVAL_MS = 60_000;

/**
 * Logs `describe()` and the session's progress every `intervalMs` while it is open (0: never);
 * returns the stop. The timer is unref'd: it never keeps the process alive.
 */
export function logProgressEvery(
  progress: SessionProgress,
  o: { intervalMs: number; describe: () => string; log: (line: string) => void },
): () => void {
  if (!(o.intervalMs > 0)) return () => {};
  let last = { at: performance.now(), compared: 0 };
  const timer = setInterval(() => {
    if (!progress.open) return;
    const s = progress.snapshot();
    const now = performance.now();
    const rate = (s.bytesCompared - last.compared) / Math.max((now - last.at) / 1000, 1e-3);
    last = { at: now, compared: s.bytesCompared };
    const percent = s.bytesTotal > 0 ? Math.floor((s.bytesCompared / s.bytesTotal) * 100) : 100;
    o.log(
      `${o.describe()}: in progress: compared ${formatBytes(s.bytesCompared)} of ${formatBytes(s.bytesTotal)} (${percent}%), ` +
        `${(rate / 1e6).toFixed(1)} MB/s, changed ${formatBytes(s.bytesChanged)}, wire in ${formatBytes(s.wireBytesReceived)} out ${formatBytes(s.wireBytesSent)}`,
    );
  }, o.intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
