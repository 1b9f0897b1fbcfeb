/**
 * signatureBytes: the digest records a sync exchanged (SIGS_REPLY received by a push source,
 * READ_DIFF sent by a pull destination), counted by the client's wire counters and reported in
 * the --json summary. Exact: it equals the record bytes of those messages on the wire.
 */
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { DIGEST_SIZE } from "../protocol/constants.ts";
import { runSyncCommand } from "../src/cli/sync-command.ts";
import { WorkerPool } from "../src/engine/worker-pool.ts";
import { recordedSync } from "./helpers/recorded-sync.ts";
import type { RecordingChannel } from "./helpers/recording-channel.ts";
import { makeSparseFile, withTempDir } from "./helpers/sparse.ts";

const MiB = 1 << 20;
const BS = 65536;
const T = { timeout: 30_000 };
/** 8 MiB apparent: 2 MiB of data (32 blocks) at 1 MiB, the rest holes. */
const SIZE = 8 * MiB;
const DATA_BLOCKS = 32;

const pool = new WorkerPool({ size: 2 });
after(() => pool[Symbol.asyncDispose]());

function makeSource(file: string, seed = 1): void {
  makeSparseFile(file, { size: SIZE, chunks: [{ offset: MiB, length: 2 * MiB, seed }] });
}

function recordBytes(wire: RecordingChannel, dir: "sent" | "received", type: string): number {
  return wire[dir].filter((m) => m.type === type).reduce((n, m) => n + m.recordBytes, 0);
}

describe("signatureBytes", () => {
  for (const mode of ["push", "pull"] as const) {
    test(`${mode}: equals the ${mode === "push" ? "SIGS_REPLY" : "READ_DIFF"} record bytes; an identical destination costs one digest per data block`, T, async () => {
      await withTempDir(async (dir) => {
        const src = path.join(dir, "src.img");
        const dst = path.join(dir, "dst.img");
        makeSource(src);
        const first = await recordedSync(src, dst, { mode, blockSize: BS, pool });
        const again = await recordedSync(src, dst, { mode, blockSize: BS, pool });
        for (const r of [first, again]) {
          const [dirn, type] = mode === "push" ? ["received", "SIGS_REPLY"] as const : ["sent", "READ_DIFF"] as const;
          const expected = recordBytes(r.wire, dirn, type);
          assert.ok(expected > 0, `${type} crossed the wire`);
          assert.equal(r.report.wire.signatureBytes, expected);
        }
        // The second time every data block has a digest on both sides: at least one per block,
        // and little beyond them (record headers, run headers).
        const s = again.report.wire.signatureBytes;
        assert.ok(s >= DATA_BLOCKS * DIGEST_SIZE, `${s} bytes for ${DATA_BLOCKS} digests`);
        assert.ok(s <= DATA_BLOCKS * DIGEST_SIZE + 2048, `${s} bytes: more than digests and headers`);
        // A first copy onto nothing: all-hole digests, run-length coded.
        assert.ok(first.report.wire.signatureBytes < 1024, `${first.report.wire.signatureBytes} bytes for an absent destination`);
      });
    });
  }

  test("the ssync sync summary reports it", T, async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      const dst = path.join(dir, "dst.img");
      makeSource(src);
      await runSyncCommand(src, dst, { json: true });
      makeSource(src, 2);
      const s = await runSyncCommand(src, dst, { json: true });
      assert.equal(typeof s.signatureBytes, "number");
      assert.ok(s.signatureBytes >= DATA_BLOCKS * DIGEST_SIZE, `${s.signatureBytes} bytes for ${DATA_BLOCKS} digests`);
      // Its two sides talk through memory: no wire counters to report.
      assert.equal(s.wireBytesReceived, undefined);
    });
  });
});
