/** The interval set behind COMMIT's coverage check: distinct blocks, overlaps refused. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { CoveredBlocks } from "../src/engine/covered-blocks.ts";

test("ranges closing out of order merge into one interval; the count is distinct blocks", () => {
  const c = new CoveredBlocks();
  for (const first of [3, 0, 9, 6]) c.add(first, 3);
  assert.deepEqual(c.intervals(), [[0, 12]]);
  assert.equal(c.count, 12);
  c.add(20, 5);
  c.add(14, 2);
  assert.deepEqual(c.intervals(), [[0, 12], [14, 16], [20, 25]]);
  c.add(12, 2);
  c.add(16, 4);
  assert.deepEqual(c.intervals(), [[0, 25]]);
  assert.equal(c.count, 25);
});

test("any overlap with a covered block is refused and changes nothing", () => {
  const c = new CoveredBlocks();
  c.add(10, 10);
  c.add(30, 10);
  for (const [first, count] of [[10, 10], [0, 11], [19, 1], [15, 2], [5, 30], [39, 5], [25, 6]]) {
    assert.throws(() => c.add(first, count), /already covered/, `[${first}, +${count})`);
  }
  assert.deepEqual(c.intervals(), [[10, 20], [30, 40]]);
  assert.equal(c.count, 20);
  c.add(20, 10);
  assert.deepEqual(c.intervals(), [[10, 40]]);
});

test("a random disjoint cover in random order ends as one interval of every block", () => {
  const c = new CoveredBlocks();
  const ranges: [number, number][] = [];
  for (let first = 0; first < 100_000;) {
    const count = 1 + Math.floor(Math.random() * 300);
    ranges.push([first, count]);
    first += count;
  }
  ranges.sort(() => Math.random() - 0.5);
  for (const [first, count] of ranges) c.add(first, count);
  const end = ranges.reduce((m, [f, n]) => Math.max(m, f + n), 0);
  assert.deepEqual(c.intervals(), [[0, end]]);
  assert.equal(c.count, end);
});
