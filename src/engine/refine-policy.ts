/**
 * Whether a source asks REFINE round trips, learned from what they found. A refinement pays
 * when it saves bytes: one whose pages nearly all differ (a block rewritten whole) costs a
 * round trip and a second read and hash on both sides for nothing.
 *
 * Invariants:
 * - Decayed sums of the bytes refined and of the bytes found unchanged; round trips stay on
 *   while unchanged ≥ 1/8 of refined (the bar compression has to clear), or while too little
 *   was refined to tell (MIN_EVIDENCE).
 * - Off, one job in PROBE_EVERY still refines, so the estimate follows the data.
 * - Blocks the destination holds as zeros are not the policy's: they need no round trip and
 *   always go page by page.
 */
const DECAY = 0.95;
const WORTH_IT = 1 / 8;
const MIN_EVIDENCE = 8 * 65536;
const PROBE_EVERY = 16;

export class RefinePolicy {
  #refined = 0;
  #unchanged = 0;
  #jobs = 0;

  /** Asked once per diff job: may its differing blocks be refined? */
  roundTrips(): boolean {
    if (this.#refined < MIN_EVIDENCE || this.#unchanged >= WORTH_IT * this.#refined) return true;
    return ++this.#jobs % PROBE_EVERY === 0;
  }

  /** A refinement of `runBytes` found `changedBytes` of them different (data or zero pages). */
  learn(runBytes: number, changedBytes: number): void {
    this.#refined = this.#refined * DECAY + runBytes;
    this.#unchanged = this.#unchanged * DECAY + Math.max(0, runBytes - changedBytes);
  }
}

/** Bytes an op of a refinement changes: a PATCH's data and zero pages, a DATA's whole length. */
export function changedBytes(op: { kind: string; length: number; dataBytes?: number; zeroBytes?: number }): number {
  return op.kind === "patch" ? (op.dataBytes ?? 0) + (op.zeroBytes ?? 0) : op.kind === "zero" ? 0 : op.length;
}
