/**
 * Rate and ETA from polled snapshots: the rate is the bytes compared over the last
 * RATE_WINDOW_S seconds of samples (the whole run while it is shorter), so a burst of holes
 * or a stall shows within seconds.
 */
import type { ProgressSnapshot } from "../session/session-progress.ts";

const RATE_WINDOW_S = 5;

export interface Reading extends ProgressSnapshot {
  /** Bytes compared per second, recently. */
  rate: number;
  /** Seconds left at that rate; undefined while the rate is 0. */
  etaSeconds: number | undefined;
}

export class ProgressMeter {
  #samples: { t: number; compared: number }[] = [];

  read(s: ProgressSnapshot): Reading {
    const samples = this.#samples;
    samples.push({ t: s.elapsedSeconds, compared: s.bytesCompared });
    while (samples.length > 2 && s.elapsedSeconds - samples[1].t >= RATE_WINDOW_S) samples.shift();
    const first = samples.length > 1 ? samples[0] : { t: 0, compared: 0 };
    const span = s.elapsedSeconds - first.t;
    const rate = span > 0 ? (s.bytesCompared - first.compared) / span : 0;
    const left = s.bytesTotal - s.bytesCompared;
    return { ...s, rate, etaSeconds: left === 0 ? 0 : rate > 0 ? left / rate : undefined };
  }
}
