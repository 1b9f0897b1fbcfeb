/** The folder walk (storage/tree-walk.ts): order, kinds, no link followed, work files unlisted, folders left. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { walkTree } from "../src/storage/tree-walk.ts";
import { withTempDir } from "./helpers/sparse.ts";

test("tree walk: sorted pre-order, kinds by lstat, links not followed, ssync's work files not listed", { timeout: 10_000 }, async () => {
  await withTempDir((dir) => {
    const root = path.join(dir, "root");
    const outside = path.join(dir, "outside");
    fs.mkdirSync(path.join(root, "b/c"), { recursive: true });
    fs.mkdirSync(outside);
    fs.writeFileSync(path.join(outside, "o.img"), "o");
    fs.writeFileSync(path.join(root, "z.img"), "z");
    fs.writeFileSync(path.join(root, "b/c/a.img"), "a");
    fs.writeFileSync(path.join(root, "b/.a.img.ssync-journal"), "j");
    fs.writeFileSync(path.join(root, "b/.n.img.ssync-partial"), "p");
    fs.symlinkSync(outside, path.join(root, "a-link"));
    assert.equal(spawnSync("mkfifo", [path.join(root, "fifo")]).status, 0);
    const seen = [...walkTree(root)].map((e) => `${e.leave ? "/" : ""}${e.path}:${e.kind}`);
    assert.deepEqual(seen, ["a-link:symlink", "b:folder", "b/c:folder", "b/c/a.img:file", "/b/c:folder", "/b:folder", "fifo:fifo", "z.img:file"]);
    const pruned = [...walkTree(root, { descend: (p) => p !== "b" })].map((e) => e.path);
    assert.equal(pruned.includes("b/c"), false);
  });
});
