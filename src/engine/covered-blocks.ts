/**
 * The blocks a session's closed ranges have covered, as sorted, disjoint, non-adjacent
 * intervals [start, end). Adding a range that overlaps one already covered is refused, so
 * `count` is the number of distinct blocks covered: COMMIT's "every block covered" check
 * cannot be met by covering one range twice and another never.
 *
 * Ranges close roughly in order (a bounded number are in flight), so adjacent ranges merge
 * and the list stays short however large the file is.
 */
export class CoveredBlocks {
  #starts: number[] = [];
  #ends: number[] = [];
  #count = 0;

  get count(): number {
    return this.#count;
  }

  /** Marks [first, first + count) covered; throws a RangeError if any of it was already. */
  add(first: number, count: number): void {
    if (count <= 0) return;
    const end = first + count;
    // i = the first interval that starts after `first`.
    let lo = 0;
    let hi = this.#starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#starts[mid] <= first) lo = mid + 1;
      else hi = mid;
    }
    const i = lo;
    const before = i > 0 && this.#ends[i - 1] > first;
    const after = i < this.#starts.length && this.#starts[i] < end;
    if (before || after) throw new RangeError(`blocks [${first}, ${end}) were already covered by another range`);
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
      this.#starts.splice(i, 0, first);
      this.#ends.splice(i, 0, end);
    }
    this.#count += count;
  }

  /** The covered intervals (for tests and messages). */
  intervals(): [number, number][] {
    return this.#starts.map((s, k) => [s, this.#ends[k]]);
  }
}
