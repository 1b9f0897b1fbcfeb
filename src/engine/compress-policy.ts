/**
 * When the source compresses DATA, and at which zstd level: chosen per diff job, when the job
 * starts (`level()`), from how full the sending channel's queue is (`backlog()`, the
 * RecordChannel's sendBacklog: unsent bytes as a fraction of the bytes past which send waits),
 * sampled at each job start and at each op sent (`observe()`). Job starts alone would see a
 * biased picture: they come in bursts when ranges start, which is when the queue has just
 * drained (a range's RANGE_DONE and the next SIGS wait behind the data queued before them).
 *
 * Compression pays only when the link is the bottleneck: then the CPU waits for the link
 * anyway, and every byte zstd saves is time saved. When the CPU (or the disk) is the
 * bottleneck, the link's queue stays short, and zstd would only slow the sync down.
 *
 * Modes: "never" → 0 always. "always" → compress every job (state BOUND or HIGH, never RAW).
 * "auto" → a state machine over `fill`, the backlog (clamped to [0, 1]) averaged over time
 * (exponentially, time constant TAU_MS, each sample weighted by the time since the last):
 *
 *   RAW (0) ──fill ≥ FULL──▶ BOUND (level LEVEL)
 *   BOUND ──fill < LOW at every sample for LEAVE_MS──▶ RAW
 *   BOUND ──fill ≥ HIGH_FULL at every sample for RAISE_MS──▶ HIGH (level HIGH_LEVEL)
 *   HIGH ──fill < FULL──▶ BOUND
 *
 * Why an average: the kernel's socket buffers hold the first MiBs of a backlog out of sight,
 * so even a saturated link leaves the channel's own queue empty at some samples; the average
 * says how much of the time it was not. Hysteresis: entering needs the queue backed up for a
 * good part of TAU_MS (a burst of records is no bottleneck); leaving needs it nearly empty
 * for LEAVE_MS, far longer, so the decision does not flap; between LOW and FULL the state
 * holds. A queue still nearly always full after RAISE_MS of level-LEVEL compression means the
 * link, not the CPU, still limits (were the CPU the limit, the queue would drain): a higher
 * level then saves more bytes at no cost in time; once it drains below FULL (the CPU may
 * become the limit) the level drops back to LEVEL.
 *
 * Invariants: level() is 0 or a valid zstd level; "never" never compresses, "always" never
 * returns 0; a backlog that is not a finite number counts as 0 (no link to measure).
 */

export type CompressMode = "auto" | "never" | "always";

export const COMPRESS_MODES: readonly CompressMode[] = ["auto", "never", "always"];

/** zstd level while link-bound: 1 is fast and already saves much on typical images. */
export const LEVEL = 1;
/** zstd level while the link stays the bottleneck even so. */
export const HIGH_LEVEL = 3;
/** Time constant of the average fill. */
export const TAU_MS = 200;
/** Average fill at or above which the link counts as the bottleneck. */
export const FULL = 0.25;
/** Average fill below which the queue counts as (nearly) empty. */
export const LOW = 1 / 32;
/** Average fill at or above which the queue counts as always full (for HIGH_LEVEL). */
export const HIGH_FULL = 0.75;
export const LEAVE_MS = 1000;
export const RAISE_MS = 1000;
/** observe() samples at most this often (level() always samples). */
export const SAMPLE_MS = 2;

type State = "raw" | "bound" | "high";

export class CompressPolicy {
  readonly mode: CompressMode;
  #backlog: () => number;
  #now: () => number;
  #state: State;
  /** The average fill, in [0, 1]. */
  #fill = 0;
  /** When the current streak of samples with fill ≥ HIGH_FULL (or < LOW) began; undefined: none. */
  #highSince: number | undefined;
  #lowSince: number | undefined;
  #sampledAt: number;

  constructor(options: { mode: CompressMode; backlog: () => number; now?: () => number }) {
    if (!COMPRESS_MODES.includes(options.mode)) throw new TypeError(`unknown compress mode ${options.mode}`);
    this.mode = options.mode;
    this.#backlog = options.backlog;
    this.#now = options.now ?? (() => performance.now());
    this.#state = options.mode === "auto" ? "raw" : "bound";
    this.#sampledAt = this.#now();
  }

  /** The zstd level for the job starting now (0: send its DATA raw, try nothing). */
  level(): number {
    if (this.mode === "never") return 0;
    this.#sample();
    return this.#state === "raw" ? 0 : this.#state === "bound" ? LEVEL : HIGH_LEVEL;
  }

  /** Takes a sample of the backlog (an op is being sent); cheap, at most every SAMPLE_MS. */
  observe(): void {
    if (this.mode === "never" || this.#now() - this.#sampledAt < SAMPLE_MS) return;
    this.#sample();
  }

  /** The average fill, in [0, 1]: for tests and reports. */
  get fill(): number {
    return this.#fill;
  }

  /** "raw", "bound" or "high": for tests and reports. */
  get state(): State {
    return this.#state;
  }

  #sample(): void {
    const raw = this.#backlog();
    const b = Number.isFinite(raw) ? Math.min(1, Math.max(0, raw)) : 0;
    const t = this.#now();
    const dt = Math.max(0, t - this.#sampledAt);
    this.#sampledAt = t;
    this.#fill += (b - this.#fill) * (1 - Math.exp(-dt / TAU_MS));
    const f = this.#fill;
    this.#highSince = f >= HIGH_FULL ? this.#highSince ?? t : undefined;
    this.#lowSince = f < LOW ? this.#lowSince ?? t : undefined;
    switch (this.#state) {
      case "raw":
        if (f >= FULL) this.#enter("bound", t);
        break;
      case "bound":
        if (this.#lowSince !== undefined && this.mode === "auto" && t - this.#lowSince >= LEAVE_MS) this.#enter("raw", t);
        else if (this.#highSince !== undefined && t - this.#highSince >= RAISE_MS) this.#enter("high", t);
        break;
      case "high":
        if (f < FULL) this.#enter("bound", t);
        break;
      default:
        throw new TypeError(`unknown state ${this.#state satisfies never}`);
    }
  }

  /** A new state: its streaks start over from this sample. */
  #enter(state: State, t: number): void {
    this.#state = state;
    if (this.#highSince !== undefined) this.#highSince = t;
    if (this.#lowSince !== undefined) this.#lowSince = t;
  }
}
