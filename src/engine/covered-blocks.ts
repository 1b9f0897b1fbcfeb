/**
 * The blocks a session's ranges have covered, as sorted, disjoint, non-adjacent intervals
 * [start, end). Adding a range that overlaps one already covered is refused, so `count` is
 * the number of distinct blocks covered: COMMIT's "every block covered" check cannot be met
 * by covering one range twice and another never.
 *
 * Ranges arrive roughly in order (a bounded number are in flight), so adjacent ranges merge
 * and the list stays short however large the file is. A peer chooses the order, though: at
 * most `maxIntervals` disjoint intervals are kept, and an add that would keep more is
 * refused. Each add costs O(log n) to find its place plus O(n) to insert, n ≤ maxIntervals,
 * so any sequence of adds is linear in its length.
 */
export class CoveredBlocks {
  #starts: number[] = [];
  #ends: number[] = [];
  #count = 0;
  #maxIntervals: number;

  constructor(options: { maxIntervals?: number } = {}) {
    this.#maxIntervals = options.maxIntervals ?? Infinity;
  }

  get count(): number {
    return this.#count;
  }

  /** Disjoint intervals kept now (≤ maxIntervals). */
  get intervalCount(): number {
    return this.#starts.length;
  }

  /**
   * Marks [first, first + count) covered; throws a RangeError, changing nothing, if any of it
   * was already covered or if one more disjoint interval would pass maxIntervals.
   */
  add(first: number, count: number): void {
    if (count <= 0) return;
    const end = first + count;
    const i = this.#firstAfter(first);
    if (this.#overlaps(i, first, end)) throw new RangeError(`blocks [${first}, ${end}) were already covered by another range`);
    const joinPrev = i > 0 && this.#ends[i - 1] === first;
    const joinNext = i < this.#starts.length && this.#starts[i] === end;
    if (joinPrev && joinNext) {
      this.#ends[i - 1] = this.#ends[i];
      this.#starts.splice(i, 1);
      this.#ends.splice(i, 1);
    } else if (joinPrev) {
      this.#ends[i - 1] = end;
    } else if (joinNext) {
      this.#starts[i] = first;
    } else {
      if (this.#starts.length >= this.#maxIntervals) {
        throw new RangeError(`blocks [${first}, ${end}) would make more than ${this.#maxIntervals} disjoint covered intervals`);
      }
      this.#starts.splice(i, 0, first);
      this.#ends.splice(i, 0, end);
    }
    this.#count += count;
  }

  /** The covered intervals (for tests and messages). */
  intervals(): [number, number][] {
    return this.#starts.map((s, k) => [s, this.#ends[k]]);
  }

  /** The index of the first interval that starts after `first` (binary search). */
  #firstAfter(first: number): number {
    let lo = 0;
    let hi = this.#starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#starts[mid] <= first) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  #overlaps(i: number, first: number, end: number): boolean {
    return (i > 0 && this.#ends[i - 1] > first) || (i < this.#starts.length && this.#starts[i] < end);
  }
}
