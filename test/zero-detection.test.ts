/** Zero detection at every byte position class: first, last and each 8-byte boundary. */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import fs from "node:fs";
import { createBlockHasher, isAllZero } from "../src/engine/block-hash.ts";
import { runSyncCommand } from "../src/cli/sync-command.ts";
import { fileHash, withTempDir } from "./helpers/sparse.ts";

const BS = 64 * 1024;

function positions(): number[] {
  const out = [0, BS - 1];
  for (let p = 8; p < BS; p += 8) out.push(p, p - 1);
  return out;
}

test("a block whose only non-zero byte is anywhere is not zero", { timeout: 30_000 }, async () => {
  const hasher = await createBlockHasher("xxh128", new Uint8Array(32));
  const block = new Uint8Array(BS);
  const digest = new Uint8Array(16);
  assert.ok(isAllZero(block));
  for (const p of positions()) {
    block[p] = 0x80;
    assert.equal(isAllZero(block), false, `byte ${p}`);
    hasher(block, digest, 0, 0);
    assert.notDeepEqual(digest, new Uint8Array(16), `digest at byte ${p}`);
    block[p] = 0;
  }
  hasher(block, digest, 0, 0);
  assert.deepEqual(digest, new Uint8Array(16), "the zero block has the zero digest");
});

test("end to end: a lone byte at first, last and word boundaries reaches the destination", { timeout: 60_000 }, async () => {
  await withTempDir(async (dir) => {
    const src = path.join(dir, "src.img");
    const dst = path.join(dir, "dst.img");
    const picks = [0, 7, 8, 4095, 4096, 32768, BS - 8, BS - 1];
    fs.writeFileSync(src, new Uint8Array(picks.length * BS));
    const fd = fs.openSync(src, "r+");
    picks.forEach((p, i) => fs.writeSync(fd, new Uint8Array([1]), 0, 1, i * BS + p));
    fs.closeSync(fd);
    const s = await runSyncCommand(src, dst, {});
    assert.equal(fileHash(dst), fileHash(src));
    assert.equal(s.blocksSent, picks.length, "every block with one byte was sent");
  });
});
