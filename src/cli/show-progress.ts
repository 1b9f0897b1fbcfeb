/**
 * Shows one session's progress on stderr while it runs: polls its SessionProgress on a timer
 * (the live line ≤ 10 times a second, JSON once a second), nothing before the session is
 * open. The returned stop ends it: the line is cleared, JSON gets its final event.
 *
 * An abort (Ctrl-C) clears the line at once: whatever prints the interruption prints it on a
 * clean line. Timers are unref'd: they never keep the process alive.
 */
import process from "node:process";
import { clearInterval, setInterval } from "node:timers";
import type { ProgressSource } from "../session/session-progress.ts";
import { progressEvent } from "./progress-json.ts";
import { formatProgressLine, ProgressLine } from "./progress-line.ts";
import { ProgressMeter } from "./progress-meter.ts";
import type { ProgressFormat } from "./progress-mode.ts";

export const LINE_INTERVAL_MS = 100;
export const JSON_INTERVAL_MS = 1000;

export interface ShowProgressOptions {
  format: ProgressFormat | undefined;
  /** A local sync: no wire counters shown. */
  local: boolean;
  phase: "sync" | "verify";
  signal?: AbortSignal;
}

export function showProgress(progress: ProgressSource, o: ShowProgressOptions): () => void {
  if (o.format === undefined) return () => {};
  const meter = new ProgressMeter();
  const shape = { local: o.local, phase: o.phase };
  const out = process.stderr;
  let tick: () => void;
  let end: () => void;
  if (o.format === "line") {
    const line = new ProgressLine(out);
    tick = () => progress.open && line.draw(formatProgressLine(meter.read(progress.snapshot()), shape));
    end = () => line.clear();
  } else {
    const emit = (final: boolean) => out.write(JSON.stringify(progressEvent(meter.read(progress.snapshot()), { ...shape, final })) + "\n");
    tick = () => progress.open && emit(false);
    end = () => progress.open && emit(true);
  }
  const timer = setInterval(tick, o.format === "line" ? LINE_INTERVAL_MS : JSON_INTERVAL_MS);
  timer.unref();
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    clearInterval(timer);
    o.signal?.removeEventListener("abort", stop);
    end();
  };
  o.signal?.addEventListener("abort", stop, { once: true });
  return stop;
}
