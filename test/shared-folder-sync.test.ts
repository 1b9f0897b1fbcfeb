/**
 * The group commit of folder fsyncs (src/storage/shared-folder-sync.ts): files committing into
 * one folder at once share its fsyncs, yet each waits for an fsync that began after its call;
 * two names of one folder share, two folders do not; a failure reaches every waiter.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { folderSyncsBegun, syncFolderShared } from "../src/storage/shared-folder-sync.ts";
import { withTempDir } from "./helpers/sparse.ts";

const T = { timeout: 20_000 };

describe("shared folder fsync", () => {
  test("20 renames committed at once cost at most 2 fsyncs of their folder, and each one's fsync began after its call", T, async () => {
    await withTempDir(async (dir) => {
      const before = folderSyncsBegun();
      const calls: Promise<void>[] = [];
      for (let i = 0; i < 20; i++) {
        fs.writeFileSync(path.join(dir, `.f${i}.partial`), "x");
        fs.renameSync(path.join(dir, `.f${i}.partial`), path.join(dir, `f${i}`));
        calls.push(syncFolderShared(dir));
      }
      await Promise.all(calls);
      const shared = folderSyncsBegun() - before;
      assert.ok(shared >= 1 && shared <= 2, `${shared} fsyncs for 20 files`);
      // A call made while an fsync runs does not take that one: it waits for the next.
      const first = syncFolderShared(dir);
      const second = syncFolderShared(dir);
      const third = syncFolderShared(dir);
      const at = folderSyncsBegun();
      await Promise.all([first, second, third]);
      assert.equal(folderSyncsBegun(), at + 1, "second and third share one fsync begun after the first ended");
    });
  });

  test("two names of one folder share; two folders do not", T, async () => {
    await withTempDir(async (dir) => {
      fs.mkdirSync(path.join(dir, "a"));
      fs.mkdirSync(path.join(dir, "b"));
      const fd = fs.openSync(path.join(dir, "a"), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
      try {
        let before = folderSyncsBegun();
        await Promise.all([syncFolderShared(path.join(dir, "a")), syncFolderShared(path.join(dir, "b"))]);
        assert.equal(folderSyncsBegun() - before, 2, "one fsync per folder");
        const running = syncFolderShared(path.join(dir, "a"));
        before = folderSyncsBegun();
        await Promise.all([running, syncFolderShared(`/proc/self/fd/${fd}`), syncFolderShared(path.join(dir, "a"))]);
        assert.equal(folderSyncsBegun() - before, 1, "the descriptor's name and the path share the next fsync");
      } finally {
        fs.closeSync(fd);
      }
    });
  });

  test("a folder that is gone fails its callers", T, async () => {
    await withTempDir(async (dir) => {
      await assert.rejects(syncFolderShared(path.join(dir, "missing")), (e: Error & { code?: string }) => e.code === "ENOENT");
    });
  });
});
