/**
 * How many ranges a push keeps in flight: RANGES_IN_FLIGHT over a link, LOCAL_RANGES_IN_FLIGHT
 * when the server runs in this process (`ssync sync`), whose first copy would otherwise hold
 * twice the job results beside the destination's buffers. Counted on the wire: a range is in
 * flight from its SIGS until its RANGE_DONE.
 */
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { WorkerPool } from "../src/engine/worker-pool.ts";
import { PeekedChannel } from "../src/listener/batch-server.ts";
import { IdleTimeoutChannel } from "../src/net/idle-timeout-channel.ts";
import { IncompleteOnLossChannel } from "../src/net/incomplete-on-loss-channel.ts";
import { RateLimitedChannel } from "../src/net/rate-limited-channel.ts";
import { memoryPair } from "../src/session/memory-pair.ts";
import { LOCAL_RANGES_IN_FLIGHT, RANGES_IN_FLIGHT } from "../src/session/session-limits.ts";
import { recordedSync } from "./helpers/recorded-sync.ts";
import type { RecordingChannel } from "./helpers/recording-channel.ts";
import { fileHash, makeSparseFile, withTempDir } from "./helpers/sparse.ts";

const MiB = 1024 * 1024;
const pool = new WorkerPool({ size: 2 });
after(() => pool[Symbol.asyncDispose]());

/** Most ranges open at once: SIGS sent and no RANGE_DONE sent for them yet. */
function mostOpen(wire: RecordingChannel): number {
  let open = 0;
  let most = 0;
  for (const m of wire.sent) {
    if (m.type === "SIGS") most = Math.max(most, ++open);
    else if (m.type === "RANGE_DONE") open--;
  }
  assert.equal(open, 0, "every range closed");
  return most;
}

describe("ranges in flight", () => {
  assert.ok(LOCAL_RANGES_IN_FLIGHT < RANGES_IN_FLIGHT);
  for (const inProcess of [true, false]) {
    const limit = inProcess ? LOCAL_RANGES_IN_FLIGHT : RANGES_IN_FLIGHT;
    test(`${inProcess ? "server in this process" : "server over a link"}: a 48 MiB first copy keeps ${limit} ranges open at most, and reaches that`, { timeout: 60_000 }, async () => {
      await withTempDir(async (dir) => {
        const src = path.join(dir, "src.img");
        const dst = path.join(dir, "dst.img");
        // 12 data ranges of 4 MiB (DATA_RANGE_BYTES): more than either limit.
        makeSparseFile(src, { size: 64 * MiB, chunks: [{ offset: 8 * MiB, length: 48 * MiB, seed: 7 }] });
        const r = await recordedSync(src, dst, { mode: "push", blockSize: 64 * 1024, pool, ...(inProcess ? {} : { inProcess: false as const }) });
        assert.ok(r.wire.sent.filter((m) => m.type === "SIGS").length > RANGES_IN_FLIGHT, "more ranges than either limit");
        assert.equal(mostOpen(r.wire), limit);
        assert.equal(fileHash(dst), fileHash(src));
      });
    });
  }
  test("the channel wrappers pass inProcess on", async () => {
    const [a, b] = memoryPair();
    const wrapped = [new IdleTimeoutChannel(a, { timeoutMs: 60_000 }), new RateLimitedChannel(a, {}), new IncompleteOnLossChannel(a, { peer: "test" }), new PeekedChannel(a)];
    for (const w of wrapped) assert.equal(w.inProcess, true, w.constructor.name);
    assert.equal(new IdleTimeoutChannel(new RateLimitedChannel(b, {}), { timeoutMs: 60_000 }).inProcess, true, "nested");
    a.close();
    b.close();
    await Promise.all([a, b].map((c) => c[Symbol.asyncDispose]()));
  });
});
