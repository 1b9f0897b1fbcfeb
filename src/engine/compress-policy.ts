/**
 * When the source compresses DATA, and at which zstd level: chosen per diff job, when the job
 * starts (`level()`), from how full the sending channel's queue is (`backlog()`, the
 * RecordChannel's sendBacklog: unsent bytes as a fraction of the bytes past which send waits),
 * sampled at each job start and at each op sent (`observe()`, `sent()`), and from the DATA
 * that went out (`sent(raw, wire, level)`: the bytes an op stands for, its payload's, and the
 * level its job was started with). Job starts alone would see a biased picture: they come in
 * bursts when ranges start, which is when the queue has just drained (a range's RANGE_DONE
 * and the next SIGS wait behind the data queued before them).
 *
 * Compression pays only when the link is the bottleneck: then the CPU waits for the link
 * anyway, and every byte zstd saves is time saved. When the CPU (or the disk) is the
 * bottleneck, zstd only slows the sync down. A queue that backs up does not tell which: a
 * receiver whose CPU is the limit (over loopback or a fast LAN; on cores both ends share)
 * backs it up just as a slow link does. So "auto" tries, and keeps a level only while it
 * raises the rate at which raw DATA bytes go out.
 *
 * Modes: "never" → 0 always. "always" → compress every job (BOUND or HIGH by the fill alone,
 * never RAW, no trials). "auto" → a state machine over `fill`, the backlog (clamped to [0, 1])
 * averaged over time (exponentially, time constant TAU_MS, each sample weighted by the time
 * since the last), and over trials of one level against another:
 *
 *   RAW ──fill ≥ FULL, not held off──▶ trial [0, LEVEL]
 *   BOUND ──fill ≥ HIGH_FULL at every sample for RAISE_MS, not held off──▶ trial [LEVEL, HIGH_LEVEL]
 *   BOUND, HIGH ──every recheck interval──▶ trial [its level, 0]
 *   a trial ──the higher level pays──▶ its state (BOUND: LEVEL, HIGH: HIGH_LEVEL)
 *           ──it costs──▶ the lower level's state, that trial held off
 *           ──unclear──▶ BOUND;  ──undecided──▶ where it started
 *   BOUND, HIGH, a trial ──fill < LOW at every sample for LEAVE_MS──▶ RAW
 *   HIGH ──fill < FULL──▶ BOUND
 *
 * A trial measures two phases, one at each of its levels: the DATA bytes sent (raw and on the
 * wire: DATA and PATCH payloads) over at least MEASURE_MS and MEASURE_BYTES, each from the
 * moment the last CLEAN_BYTES that went out were all of jobs started at its level (and, after
 * the switch to the second level, SETTLE_MS): a proxy for "the jobs of the other level are
 * out" (a range may still send a few of them later; they are counted in). The ranges in flight hold ~16 MiB of jobs started
 * before a switch, seconds of them on a slow link; the first phase is usually measured at
 * once, unless another trial just ended at another level. The higher level pays when its
 * phase sent raw bytes at least as fast as the lower's. While the queue is backed up both are
 * rates the bottleneck allowed, and neither depends much on the data each phase happened to
 * cover: a link passes so many wire bytes a second (the raw rate grows by what zstd saved), a
 * CPU so many raw bytes (zstd only adds work to it). (A recheck may find the queue no longer
 * backed up: then both are the source's pace, and LEAVE_MS will end compressing anyway.) A
 * trial whose higher level saved too little more than the lower (its raw ÷ wire below C_MIN
 * times the other's; C_MIN_HIGH for LEVEL against HIGH_LEVEL) is unclear: a link-bound sync
 * would measure the same rate twice (random data). Then BOUND: zstd gives up on such data
 * after a 4 KiB sample (data-ops.ts), and a recheck comes soon. A wrong "costs" loses more on a
 * link (a hold of raw sending what zstd would halve) than a wrong "pays" on a CPU (a recheck
 * interval some percent slower), so a tie pays. A queue nearly empty for LEAVE_MS shows no
 * bottleneck at all, in a trial too: RAW (a phase's fill at one moment says little: the
 * socket's buffers hide a backlog at many samples). No DATA for PHASE_IDLE_MS, or a phase
 * longer than PHASE_MAX_MS, decides nothing (undecided).
 *
 * Back-off: a trial of compressing that failed or decided nothing holds RAW's trials off for
 * `hold` (HOLD_MS, doubled each time up to HOLD_MAX_MS, back to HOLD_MS after a success); one
 * of HIGH_LEVEL holds BOUND's raise off the same way; a trial of compressing that paid
 * schedules the next recheck after `recheck` (RECHECK_MS, doubled by each success up to
 * RECHECK_MAX_MS), and a due recheck goes before a raise. Every such wait is at least
 * TRIAL_SPACING times as long as the trial before it took (on a slow link, the jobs in flight
 * make a trial long: seconds to minutes). So a CPU-bound sync pays for a short
 * compressed phase per hold, a link-bound one for a short raw phase per recheck (the bench's
 * first copy over loopback, 2 cores, medians of 5: 15.8 s before trials, 11.4 s with them).
 *
 * Why an average: the kernel's socket buffers hold the first MiBs of a backlog out of sight,
 * so even a saturated link leaves the channel's own queue empty at some samples; the average
 * says how much of the time it was not. Hysteresis: entering needs the queue backed up for a
 * good part of TAU_MS (a burst of records is no bottleneck); leaving needs it nearly empty
 * for LEAVE_MS, far longer, so the decision does not flap; between LOW and FULL the state
 * holds. HIGH drops back to LEVEL once the queue drains below FULL (the CPU may become the limit).
 *
 * Invariants: level() is 0 or a valid zstd level; "never" never compresses, "always" never
 * returns 0; a backlog that is not a finite number counts as 0 (no link to measure); "auto"
 * holds a level above 0 (outside trials) only after a trial in which it did not cost rate or
 * could not tell (unclear, then LEVEL); a trial ends (PHASE_IDLE_MS, PHASE_MAX_MS), and so
 * does every hold and recheck interval (HOLD_MAX_MS, RECHECK_MAX_MS, or TRIAL_SPACING times
 * the length of the trial before it).
 */

import type { JobOp } from "./scan-job.ts";

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
/** A trial's phase is measured over at least this long and this many raw DATA bytes. */
export const MEASURE_MS = 500;
export const MEASURE_BYTES = 2 << 20;
/** A phase is measured once CLEAN_BYTES went out with no op of a job at another level; the second, also not before SETTLE_MS after the switch. */
export const SETTLE_MS = 100;
export const CLEAN_BYTES = 2 << 20;
/**
 * A trial ends undecided when no DATA went out for PHASE_IDLE_MS (the queue holds something
 * else), or a phase has not got its bytes after PHASE_MAX_MS (a link below ~0.5 MiB/s: the
 * jobs in flight alone take that long).
 */
export const PHASE_IDLE_MS = 10_000;
export const PHASE_MAX_MS = 60_000;
/** A packed phase whose bytes shrank by less than this ratio tells nothing of the bottleneck. */
export const C_MIN = 1.1;
/** Nor does a HIGH_LEVEL phase that shrank them by less than this ratio more than LEVEL did. */
export const C_MIN_HIGH = 1.03;
export const HOLD_MS = 4000;
export const HOLD_MAX_MS = 60_000;
export const RECHECK_MS = 4000;
export const RECHECK_MAX_MS = 30_000;
/**
 * The next trial waits at least this many times as long as the last one took. A trial costs its
 * phase at the worse level and the jobs started in it (~16 MiB, minutes of them on a slow link,
 * even when the trial pays), so trials stay a small part of any sync, however slow its link.
 */
export const TRIAL_SPACING = 10;
/** `outcomes` keeps the last this many: a session may last for days. */
const MAX_OUTCOMES = 1000;

type State = "raw" | "bound" | "high";

/** Each state's zstd level, and back. */
const LEVEL_OF: Readonly<Record<State, number>> = { raw: 0, bound: LEVEL, high: HIGH_LEVEL };

function stateOf(level: number): State {
  return level === 0 ? "raw" : level === LEVEL ? "bound" : "high";
}

/** The DATA bytes sent so far (raw: what the ops stand for; wire: their payloads) at time t. */
interface Mark {
  t: number;
  raw: number;
  wire: number;
}

/** A phase's rates, bytes per ms. */
interface Rates {
  level: number;
  raw: number;
  wire: number;
}

interface Trial {
  /** The state it started from, and returns to when it decides nothing; when it started. */
  from: State;
  started: number;
  /** The level of each phase: two different levels. */
  levels: readonly [number, number];
  phase: 0 | 1;
  /** When the current phase began; measured from `measuring` on (undefined: settling). */
  begun: Mark;
  measuring: Mark | undefined;
  /** Settling: raw bytes sent since the last op of a job started at another level than this phase's. */
  clean: number;
  /** The first phase's rates, once measured. */
  first: Rates | undefined;
}

/** What a trial ended with: for tests and reports. */
export type TrialOutcome = "pays" | "costs" | "undecided" | "unclear" | "no bottleneck";

/** A trial that ended: its two levels (the first measured first), its outcome, when (ms, the policy's clock), and how long it took. */
export interface TrialRecord {
  levels: readonly [number, number];
  outcome: TrialOutcome;
  at: number;
  took: number;
}

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
  /** DATA bytes sent, raw and on the wire. */
  #raw = 0;
  #wire = 0;
  #trial: Trial | undefined;
  /** RAW holds off trials until then; the next hold's length. */
  #heldUntil = -Infinity;
  #hold = HOLD_MS;
  /** BOUND/HIGH start a trial then; the next interval. */
  #recheckAt = Infinity;
  #recheck = RECHECK_MS;
  /** BOUND holds off trials of HIGH_LEVEL until then; the next such hold's length. */
  #raiseHeldUntil = -Infinity;
  #raiseHold = HOLD_MS;
  #outcomes: TrialRecord[] = [];
  /** The level of the last DATA sent, the raw bytes of the run of DATA at that level ending with it, and when. */
  #lastLevel = -1;
  #run = 0;
  #sentAt = -Infinity;

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
    return this.#trial ? this.#trial.levels[this.#trial.phase] : LEVEL_OF[this.#state];
  }

  /** Takes a sample of the backlog (an op is being sent); cheap, at most every SAMPLE_MS. */
  observe(): void {
    if (this.mode === "never" || this.#now() - this.#sampledAt < SAMPLE_MS) return;
    this.#sample();
  }

  /** A DATA op went out: `raw` bytes of the file, `wire` bytes of payload, of a job started at `level`; then observe(). */
  sent(raw: number, wire: number, level: number): void {
    if (this.mode !== "auto") return;
    this.#raw += raw;
    this.#wire += wire;
    this.#run = level === this.#lastLevel ? this.#run + raw : raw;
    this.#lastLevel = level;
    this.#sentAt = this.#now();
    const trial = this.#trial;
    if (trial !== undefined && trial.measuring === undefined) trial.clean = level === trial.levels[trial.phase] ? trial.clean + raw : 0;
    this.observe();
  }

  /** sent() for an op that went out: a DATA's bytes, a PATCH's data pages; other ops carry no DATA. */
  sentOp(op: JobOp, level: number): void {
    if (op.kind === "data" && op.payload !== undefined) this.sent(op.length, op.payload.length, level);
    else if (op.kind === "patch" && op.payload !== undefined) this.sent(op.dataBytes, op.payload.length, level);
  }

  /** The average fill, in [0, 1]: for tests and reports. */
  get fill(): number {
    return this.#fill;
  }

  /** "raw", "bound" or "high" (a trial runs within one of them): for tests and reports. */
  get state(): State {
    return this.#state;
  }

  /** Whether a trial is running: for tests and reports. */
  get trying(): boolean {
    return this.#trial !== undefined;
  }

  /** How each trial ended, in order (the last MAX_OUTCOMES): for tests and reports. */
  get outcomes(): readonly TrialRecord[] {
    return this.#outcomes;
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
    if (this.#trial) return this.#advance(this.#trial, t);
    switch (this.#state) {
      case "raw":
        if (f >= FULL && (this.mode !== "auto" || t >= this.#heldUntil)) {
          if (this.mode === "auto") this.#try("raw", [0, LEVEL], t);
          else this.#enter("bound", t);
        }
        break;
      case "bound":
        // A recheck that is due goes first: a raise held off must not put it off.
        if (this.#lowSince !== undefined && this.mode === "auto" && t - this.#lowSince >= LEAVE_MS) this.#enter("raw", t);
        else if (t >= this.#recheckAt) this.#try("bound", [LEVEL_OF.bound, 0], t);
        else if (this.#highSince !== undefined && t - this.#highSince >= RAISE_MS) {
          if (this.mode !== "auto") this.#enter("high", t);
          else if (t >= this.#raiseHeldUntil) this.#try("bound", [LEVEL, HIGH_LEVEL], t);
        }
        break;
      case "high":
        if (f < FULL) this.#enter("bound", t);
        else if (t >= this.#recheckAt) this.#try("high", [LEVEL_OF.high, 0], t);
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

  #holdRaise(t: number, spacing: number): void {
    this.#raiseHeldUntil = t + Math.max(this.#raiseHold, spacing);
    this.#raiseHold = Math.min(HOLD_MAX_MS, 2 * this.#raiseHold);
  }

  #mark(t: number): Mark {
    return { t, raw: this.#raw, wire: this.#wire };
  }

  /**
   * Starts a trial. Its first phase runs at the level the jobs already use, and is measured at
   * once when the DATA going out is of that level already (CLEAN_BYTES of it; else once it is:
   * another trial may just have ended at another level).
   */
  #try(from: State, levels: readonly [number, number], t: number): void {
    const clean = this.#lastLevel === levels[0] ? this.#run : 0;
    const trial: Trial = { from, levels, started: t, phase: 0, begun: this.#mark(t), measuring: undefined, clean, first: undefined };
    this.#trial = trial;
    this.#advance(trial, t);
  }

  #advance(trial: Trial, t: number): void {
    if (this.#lowSince !== undefined && t - this.#lowSince >= LEAVE_MS) return this.#end(trial, "no bottleneck", t);
    const since = t - trial.begun.t;
    if (t - Math.max(this.#sentAt, trial.begun.t) >= PHASE_IDLE_MS || since >= PHASE_MAX_MS) return this.#end(trial, "undecided", t);
    if (trial.measuring === undefined) {
      if ((trial.phase === 0 || since >= SETTLE_MS) && trial.clean >= CLEAN_BYTES) trial.measuring = this.#mark(t);
      return;
    }
    const m = trial.measuring;
    const dt = t - m.t;
    if (dt < MEASURE_MS || this.#raw - m.raw < MEASURE_BYTES) return;
    const rates: Rates = { level: trial.levels[trial.phase], raw: (this.#raw - m.raw) / dt, wire: (this.#wire - m.wire) / dt };
    if (trial.phase === 0) {
      trial.first = rates;
      trial.phase = 1;
      trial.begun = this.#mark(t);
      trial.measuring = undefined;
      trial.clean = 0;
      return;
    }
    const [lower, higher] = rates.level < trial.first!.level ? [rates, trial.first!] : [trial.first!, rates];
    // The higher level's ratio (raw ÷ wire) against the lower's: too close to tell the bottleneck.
    const cMin = lower.level === 0 ? C_MIN : C_MIN_HIGH;
    if (higher.raw * lower.wire < cMin * higher.wire * lower.raw) return this.#end(trial, "unclear", t);
    this.#end(trial, higher.raw >= lower.raw ? "pays" : "costs", t);
  }

  #end(trial: Trial, outcome: TrialOutcome, t: number): void {
    this.#trial = undefined;
    if (this.#outcomes.length >= MAX_OUTCOMES) this.#outcomes.shift();
    this.#outcomes.push({ levels: trial.levels, outcome, at: t, took: t - trial.started });
    const lower = Math.min(...trial.levels);
    const higher = Math.max(...trial.levels);
    /** A trial of LEVEL against HIGH_LEVEL (raising), not of compressing at all. */
    const raising = lower > 0;
    /** The least wait before the next trial of the same kind. */
    const spacing = TRIAL_SPACING * (t - trial.started);
    switch (outcome) {
      case "pays":
        if (raising) this.#raiseHold = HOLD_MS;
        else {
          this.#hold = HOLD_MS;
          this.#recheckAt = t + Math.max(this.#recheck, spacing);
          this.#recheck = Math.min(RECHECK_MAX_MS, 2 * this.#recheck);
        }
        return this.#enter(stateOf(higher), t);
      case "unclear":
        if (raising) this.#holdRaise(t, spacing);
        else this.#recheckAt = t + Math.max(RECHECK_MS, spacing);
        return this.#enter("bound", t);
      case "costs":
        if (raising) this.#holdRaise(t, spacing);
        else {
          this.#heldUntil = t + Math.max(this.#hold, spacing);
          this.#hold = Math.min(HOLD_MAX_MS, 2 * this.#hold);
          this.#recheck = RECHECK_MS;
        }
        return this.#enter(stateOf(lower), t);
      case "no bottleneck":
        return this.#enter("raw", t);
      case "undecided":
        // A link too slow to finish trials keeps its state: from RAW held off as after a
        // failure (doubling); a recheck or raise waits its spacing (at least 10 × 10 s).
        if (trial.from === "raw") {
          this.#heldUntil = t + Math.max(this.#hold, spacing);
          this.#hold = Math.min(HOLD_MAX_MS, 2 * this.#hold);
        } else if (raising) this.#holdRaise(t, spacing);
        else this.#recheckAt = t + Math.max(RECHECK_MS, spacing);
        return this.#enter(trial.from, t);
      default:
        throw new TypeError(`unknown outcome ${outcome satisfies never}`);
    }
  }
}
