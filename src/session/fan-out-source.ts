/**
 * One read of a push source feeding several destinations (`ssync push SRC A: B: C:`, spec
 * §5.11): each destination has its own ordinary session (connection, hash key, SIGS,
 * DATA, COMMIT); they share the range plan and the read.
 *
 * 1. The ranges are planned once (planRanges on the source) and every member iterates the
 *    same plan, so they ask for the same ranges in the same order.
 * 2. A member that has a data range's digests (SIGS_REPLY) waits at that range until every
 *    member still in the fan-out has them too; then one diffRangeTo reads the range once and
 *    hashes and compares it under each member's key, and each member gets its own ops.
 *    A hole range reads nothing: a member diffs it alone, without waiting.
 * 3. A member that fails leaves: no range waits for it any more, and a range under way drops
 *    it (diffRangeTo); the others go on. Only the fan-out's own signal (Ctrl-C) or a failed
 *    read of the source stops them all.
 *
 * Invariants:
 * - The source is read once per data range, whatever the number of members (the read
 *   counter `bytesRead` counts it once).
 * - A slow member slows the read for all (it paces every shared range): memory is that of
 *   RANGES_IN_FLIGHT ranges per member, never more, whatever the members' speeds. A member
 *   that stops answering is dropped by its own idle timeout (a closed session, an error for
 *   that destination alone).
 * - A range waits only for members that have not left; a member leaves exactly once (its
 *   session ended, either way), so no range waits for ever.
 */
import { ProtocolError } from "../../protocol/codec.ts";
import { planRanges, type Range } from "../engine/ranges.ts";
import { ReadAhead } from "../engine/read-ahead.ts";
import type { SideContext } from "../engine/side-context.ts";
import { type DiffTargetOf, diffRangeTo } from "../engine/source-side.ts";
import type { WorkerPool } from "../engine/worker-pool.ts";
import type { Storage } from "../storage/storage.ts";
import { LOOKAHEAD_JOBS } from "./session-limits.ts";

/** What a member of a fan-out uses in place of its own plan and read (client-session.ts pushRanges). */
export interface SharedSource {
  /** The shared range plan, from the start. */
  ranges(): AsyncIterable<Range>;
  /** This member's ops for `range` (through target.emit) and its digests of the source's range. */
  diff(range: Range, target: DiffTargetOf): Promise<Uint8Array>;
  /** This member's session ended (success or failure): nothing waits for it any more. */
  leave(): void;
}

type Waiting = { target: DiffTargetOf; resolve: (digests: Uint8Array) => void; reject: (e: unknown) => void };

export class FanOutSource {
  readonly #ctx: Pick<SideContext, "pool" | "store" | "blockSize" | "signal" | "readAhead">;
  readonly #size: number;
  /** Members that have not left. */
  readonly #active = new Set<number>();
  /** Data ranges some member is waiting at, by offset. */
  readonly #pending = new Map<number, { range: Range; waiting: Map<number, Waiting> }>();
  /** The plan so far: `#plan[i - #planBase]` is range i; `#cursor` per member, ranges below the smallest are dropped. */
  #plan: Range[] = [];
  #planBase = 0;
  #planDone = false;
  #planner: AsyncGenerator<Range> | undefined;
  #planning: Promise<void> | undefined;
  readonly #cursor = new Map<number, number>();
  /** Source bytes read, once per range whatever the number of members. */
  bytesRead = 0;

  constructor(o: { pool: WorkerPool; store: Storage; blockSize: number; signal: AbortSignal; members: number }) {
    this.#ctx = { pool: o.pool, store: o.store, blockSize: o.blockSize, signal: o.signal, readAhead: new ReadAhead(o.store) };
    this.#size = o.store.size;
    for (let i = 0; i < o.members; i++) {
      this.#active.add(i);
      this.#cursor.set(i, 0);
    }
  }

  member(i: number): SharedSource {
    if (!this.#active.has(i)) throw new RangeError(`no member ${i}`);
    let left = false;
    return {
      ranges: () => this.#ranges(i),
      diff: (range, target) => this.#diff(i, range, target),
      leave: () => {
        if (left) return;
        left = true;
        this.#leave(i);
      },
    };
  }

  async *#ranges(i: number): AsyncGenerator<Range> {
    for (let n = 0;; n++) {
      while (n - this.#planBase >= this.#plan.length && !this.#planDone) await this.#planMore();
      if (n - this.#planBase >= this.#plan.length) return;
      const range = this.#plan[n - this.#planBase];
      this.#cursor.set(i, n + 1);
      this.#trim();
      yield range;
    }
  }

  /** Plans the next range (one planner for all members; concurrent callers share its step). */
  #planMore(): Promise<void> {
    this.#planning ??= (async () => {
      this.#planner ??= planRanges(this.#ctx.store, { size: this.#size, blockSize: this.#ctx.blockSize });
      const next = await this.#planner.next();
      if (next.done) this.#planDone = true;
      else this.#plan.push(next.value);
    })().finally(() => {
      this.#planning = undefined;
    });
    return this.#planning;
  }

  /** Drops the ranges every active member has passed (a long plan is not kept whole). */
  #trim(): void {
    let lowest = Infinity;
    for (const i of this.#active) lowest = Math.min(lowest, this.#cursor.get(i)!);
    if (lowest === Infinity) return;
    const drop = lowest - this.#planBase;
    if (drop < 1024) return;
    this.#plan = this.#plan.slice(drop);
    this.#planBase = lowest;
  }

  #diff(i: number, range: Range, target: DiffTargetOf): Promise<Uint8Array> {
    if (!this.#active.has(i)) return Promise.reject(new Error(`Cannot diff for fan-out member ${i}: its session ended`));
    // A hole of the source: nothing to read, so nothing to share.
    if (!range.data) {
      return diffRangeTo(this.#ctx, range, { lookahead: LOOKAHEAD_JOBS }, [target]).then(([o]) => {
        if ("error" in o) throw o.error;
        return o.digests;
      });
    }
    let entry = this.#pending.get(range.offset);
    if (!entry) {
      entry = { range, waiting: new Map() };
      this.#pending.set(range.offset, entry);
    } else if (entry.range.length !== range.length) {
      return Promise.reject(new ProtocolError(`fan-out: range at ${range.offset} asked with ${range.length} bytes, planned with ${entry.range.length}`));
    }
    const waiting = entry.waiting;
    const p = new Promise<Uint8Array>((resolve, reject) => waiting.set(i, { target, resolve, reject }));
    this.#startReady(range.offset);
    return p;
  }

  #leave(i: number): void {
    this.#active.delete(i);
    this.#cursor.delete(i);
    for (const [offset, entry] of [...this.#pending]) {
      // Its own waits end (its session is over); the others' may start now.
      entry.waiting.get(i)?.reject(new Error(`Cannot diff for fan-out member ${i}: its session ended`));
      entry.waiting.delete(i);
      if (entry.waiting.size === 0) this.#pending.delete(offset);
      else this.#startReady(offset);
    }
  }

  /** Starts the range at `offset` once every active member waits at it. */
  #startReady(offset: number): void {
    const entry = this.#pending.get(offset);
    if (!entry) return;
    for (const i of this.#active) if (!entry.waiting.has(i)) return;
    this.#pending.delete(offset);
    const members = [...entry.waiting.values()];
    // Observed: #run settles every member's promise itself.
    this.#run(entry.range, members).then((digests) => digests.forEach((d, k) => d && members[k].resolve(d)), () => {});
  }

  /**
   * diffRangeTo for `members`: resolves to each member's digests (undefined for one that was
   * dropped, whose promise is rejected with its own error); rejects, and rejects every member,
   * with what stopped them all.
   */
  async #run(range: Range, members: Waiting[]): Promise<(Uint8Array | undefined)[]> {
    try {
      const outcomes = await diffRangeTo(this.#ctx, range, {
        lookahead: LOOKAHEAD_JOBS,
        onRead: (n) => this.bytesRead += n,
      }, members.map((w) => w.target));
      return outcomes.map((o, k) => {
        if ("digests" in o) return o.digests;
        members[k].reject(o.error);
        return undefined;
      });
    } catch (e) {
      for (const w of members) w.reject(e);
      throw e;
    }
  }
}
