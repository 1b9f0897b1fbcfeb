/**
 * The interval set behind COMMIT's coverage check and the server's range claims: distinct
 * blocks, overlaps refused, at most MAX_TRACKED_INTERVALS disjoint intervals (linear
 * bookkeeping whatever order a peer closes its ranges in).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ProtocolError } from "../protocol/codec.ts";
import { CoveredBlocks } from "../src/engine/covered-blocks.ts";
import { RootHash } from "../src/engine/root-hash.ts";
import { MAX_TRACKED_INTERVALS } from "../src/session/session-limits.ts";

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

test("200k ranges closed in descending order, adjacent: they merge, one interval, every add O(log n)", () => {
  const c = new CoveredBlocks({ maxIntervals: MAX_TRACKED_INTERVALS });
  const n = 200_000;
  for (let k = n - 1; k >= 0; k--) {
    c.add(k * 3, 3);
    assert.ok(c.intervalCount <= 1);
  }
  assert.deepEqual(c.intervals(), [[0, 3 * n]]);
  assert.equal(c.count, 3 * n);
});

test("200k ranges closed in descending order with gaps: refused once they would keep more than MAX_TRACKED_INTERVALS intervals", () => {
  const c = new CoveredBlocks({ maxIntervals: MAX_TRACKED_INTERVALS });
  let added = 0;
  let refused: unknown;
  for (let k = 200_000 - 1; k >= 0; k--) {
    try {
      c.add(k * 4, 3); // a one-block gap after each
    } catch (e) {
      refused = e;
      break;
    }
    added++;
    assert.ok(c.intervalCount <= MAX_TRACKED_INTERVALS);
  }
  assert.equal(added, MAX_TRACKED_INTERVALS, "the cap is where the first refusal comes");
  assert.ok(refused instanceof RangeError && /more than 1024 disjoint/.test(refused.message), String(refused));
  assert.equal(c.count, 3 * MAX_TRACKED_INTERVALS, "a refused add changes nothing");
  // Filling a gap merges two intervals: allowed at the cap, and it makes room.
  c.add((200_000 - 1) * 4 - 1, 1);
  assert.equal(c.intervalCount, MAX_TRACKED_INTERVALS - 1);
});

test("RootHash: a close past the interval cap is a ProtocolError", () => {
  const root = new RootHash(new Uint8Array(32), { maxIntervals: 4 });
  const digests = new Uint8Array(16).fill(1);
  for (let k = 0; k < 4; k++) root.add(10 - 2 * k, digests);
  assert.throws(() => root.add(0, digests), (e) => e instanceof ProtocolError && /more than 4 disjoint/.test(e.message));
  assert.equal(root.blocks, 4);
});
