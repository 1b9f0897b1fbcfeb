import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { randomFillSync } from "node:crypto";
import { openDestination } from "../src/storage/open-destination.ts";
import { WRITE_BACK_BYTES } from "../src/storage/fd-storage.ts";

/**
 * fd-storage.ts: the disk writes while a sync goes on. Dirty pages not yet written back show
 * in FIEMAP as "delalloc" extents on ext4, xfs and btrfs (filefrag -v), and a machine with
 * GiBs of RAM leaves them so for ~30 s (dirty_expire) unless someone writes them back.
 */

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ssync-write-back-"));
const filefrag = spawnSync("filefrag", ["-V"]).error ? undefined : "filefrag";

/** Bytes of `file` in extents still waiting for write-back (delalloc), or undefined when FIEMAP says nothing. */
function delallocBytes(file: string): number | undefined {
  const r = spawnSync("filefrag", ["-v", "-b4096", file], { encoding: "utf8" });
  if (r.status !== 0) return undefined;
  let bytes = 0;
  for (const line of r.stdout.split("\n")) {
    const m = /^\s*\d+:\s+(\d+)\.\.\s*(\d+):.*\s(\S+)$/.exec(line);
    if (m && m[3].split(",").includes("delalloc")) bytes += (Number(m[2]) - Number(m[1]) + 1) * 4096;
  }
  return bytes;
}

/** Whether this filesystem shows a fresh write as delalloc at all (else there is nothing to see). */
function showsDelalloc(): boolean {
  const probe = path.join(dir, "probe");
  fs.writeFileSync(probe, new Uint8Array(1 << 20).fill(1));
  const shown = (delallocBytes(probe) ?? 0) > 0;
  fs.rmSync(probe);
  return shown;
}

const skip = filefrag === undefined ? "needs filefrag (e2fsprogs)" : showsDelalloc() ? false : `${os.tmpdir()} shows no delayed allocation in FIEMAP`;

test("writes past WRITE_BACK_BYTES are on their way to the disk before the sync's fsync", { skip }, async () => {
  const file = path.join(dir, "dst.img");
  try {
    const chunk = randomFillSync(new Uint8Array(1 << 20));
    const total = WRITE_BACK_BYTES + (8 << 20);
    {
      await using dst = await openDestination(file, { inplace: true, create: true });
      for (let at = 0; at < total; at += chunk.length) await dst.write(chunk, at);
      // The write-back runs on its own: no sync, no commit yet. Polled, bounded.
      let left = delallocBytes(file)!;
      for (let i = 0; i < 100 && left > total - WRITE_BACK_BYTES; i++) {
        await new Promise((r) => setTimeout(r, 50));
        left = delallocBytes(file)!;
      }
      assert.ok(left <= total - WRITE_BACK_BYTES, `${left} of ${total} bytes still wait for write-back before any fsync`);
      await dst.commit();
    }
    assert.equal(delallocBytes(file), 0, "after the commit's fsync nothing waits");
    assert.equal(fs.statSync(file).size, total);
    const back = fs.readFileSync(file);
    for (let at = 0; at < total; at += chunk.length) assert.ok(back.subarray(at, at + chunk.length).equals(chunk), `bytes at ${at}`);
  } finally {
    fs.rmSync(file, { force: true });
  }
});

test("a failed write-back fails the next write and the commit, before the commit stamps the source's mtime", async () => {
  // The one stand-in here: a disk that fails write-back (EIO) is not something a test can make
  // on any machine; fd-storage.ts looks fs.fdatasync up at each call.
  const file = path.join(dir, "failing.img");
  const real = fs.fdatasync;
  let calls = 0;
  (fs as { fdatasync: unknown }).fdatasync = (_fd: number, cb: (e: Error | null) => void) => {
    calls++;
    setTimeout(() => cb(Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO", errno: -5 })), 10);
  };
  try {
    await using dst = await openDestination(file, { inplace: true, create: true });
    const chunk = new Uint8Array(1 << 20).fill(9);
    for (let at = 0; at < WRITE_BACK_BYTES; at += chunk.length) await dst.write(chunk, at);
    assert.equal(calls, 1, "one write-back started at WRITE_BACK_BYTES");
    let failed: Error | undefined;
    for (let i = 0; i < 100 && failed === undefined; i++) {
      await new Promise((r) => setTimeout(r, 20));
      failed = await dst.write(chunk, WRITE_BACK_BYTES).then(() => undefined, (e) => e);
    }
    assert.ok(failed, "a write after the failed write-back fails");
    assert.match(failed.message, /Cannot write .*failing\.img: writing back what this sync wrote failed earlier \(EIO/);
    const mtimeNs = 1_000_000_000_000_000_000n;
    await assert.rejects(dst.commit({ mtimeNs }), /Cannot commit .*failing\.img: writing back .* data written may be lost/);
    await assert.rejects(dst.sync(), /Cannot flush .*: writing back/);
    assert.notEqual(fs.statSync(file, { bigint: true }).mtimeNs, mtimeNs, "the failed commit stamped no mtime");
    // Another store of the same process (another session's) keeps no trace of that failure.
    (fs as { fdatasync: unknown }).fdatasync = real;
    const other = path.join(dir, "other.img");
    {
      await using ok = await openDestination(other, { inplace: true, create: true });
      for (let at = 0; at <= WRITE_BACK_BYTES; at += chunk.length) await ok.write(chunk, at);
      await ok.commit({ mtimeNs });
    }
    assert.equal(fs.statSync(other, { bigint: true }).mtimeNs, mtimeNs, "the other store committed");
  } finally {
    (fs as { fdatasync: unknown }).fdatasync = real;
    fs.rmSync(file, { force: true });
    fs.rmSync(path.join(dir, "other.img"), { force: true });
  }
});

after(() => fs.rmSync(dir, { recursive: true, force: true }));
