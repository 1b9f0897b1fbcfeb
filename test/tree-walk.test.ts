/**
 * The folder walk (storage/tree-walk.ts): order, kinds, no link followed, work files unlisted
 * but marking their file, non-UTF-8 names noted, the entry limit, the other root refused, the
 * event loop served while it walks.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { setImmediate } from "node:timers";
import type { TreeEntry } from "../src/storage/tree-entry.ts";
import { walkTree, type WalkOptions } from "../src/storage/tree-walk.ts";
import { withTempDir } from "./helpers/sparse.ts";

async function all(root: string, o: WalkOptions = {}): Promise<TreeEntry[]> {
  const out: TreeEntry[] = [];
  for await (const e of walkTree(root, o)) out.push(e);
  return out;
}

test("tree walk: sorted pre-order, kinds by lstat, links not followed, work files not listed but mark their file", { timeout: 10_000 }, async () => {
  await withTempDir(async (dir) => {
    const root = path.join(dir, "root");
    const outside = path.join(dir, "outside");
    fs.mkdirSync(path.join(root, "b/c"), { recursive: true });
    fs.mkdirSync(outside);
    fs.writeFileSync(path.join(outside, "o.img"), "o");
    fs.writeFileSync(path.join(root, "z.img"), "zz");
    fs.writeFileSync(path.join(root, "b/c/a.img"), "a");
    fs.writeFileSync(path.join(root, "b/a.img"), "a");
    fs.writeFileSync(path.join(root, "b/.a.img.ssync-journal"), "j");
    fs.writeFileSync(path.join(root, "b/.n.img.ssync-partial"), "p");
    fs.symlinkSync(outside, path.join(root, "a-link"));
    assert.equal(spawnSync("mkfifo", [path.join(root, "fifo")]).status, 0);
    const entries = await all(root);
    assert.deepEqual(entries.map((e) => `${e.path}:${e.kind}${e.pending ? ":pending" : ""}`), [
      "a-link:symlink",
      "b:folder",
      "b/a.img:file:pending",
      "b/c:folder",
      "b/c/a.img:file",
      "fifo:other",
      "z.img:file",
    ]);
    const z = entries.find((e) => e.path === "z.img")!;
    const st = fs.statSync(path.join(root, "z.img"), { bigint: true });
    assert.deepEqual([z.size, z.mtimeNs, z.ino], [2, st.mtimeNs, st.ino]);
    const pruned = (await all(root, { descend: (f) => f.path !== "b" })).map((e) => e.path);
    assert.equal(pruned.includes("b"), true);
    assert.equal(pruned.includes("b/c"), false, "a folder not descended: its contents unlisted");
    // Plain data: what LIST will carry.
    assert.doesNotThrow(() => structuredClone(entries));
  });
});

test("tree walk: a non-UTF-8 name is noted with its folder, not dropped silently", { timeout: 10_000 }, async () => {
  await withTempDir(async (dir) => {
    const root = path.join(dir, "root");
    fs.mkdirSync(path.join(root, "sub"), { recursive: true });
    fs.writeFileSync(path.join(root, "sub/ok.img"), "x");
    assert.equal(spawnSync("sh", ["-c", 'touch "$1/sub/$(printf "bad\\377name")"', "_", root]).status, 0);
    const notes: string[] = [];
    const counters = { entries: 0, undecodable: 0 };
    const paths: string[] = [];
    for await (const e of walkTree(root, { note: (folder, note) => notes.push(`${folder}: ${note}`) }, counters)) paths.push(e.path);
    assert.deepEqual(paths, ["sub", "sub/ok.img"]);
    assert.equal(counters.undecodable, 1);
    assert.equal(notes.length, 1);
    assert.match(notes[0], /^sub: a name in sub\/ is not valid UTF-8/);
  });
});

test("tree walk: the entry limit is an error that says so; the other root is refused; the event loop runs meanwhile", { timeout: 30_000 }, async () => {
  await withTempDir(async (dir) => {
    const root = path.join(dir, "root");
    fs.mkdirSync(path.join(root, "d"), { recursive: true });
    for (let i = 0; i < 3000; i++) fs.closeSync(fs.openSync(path.join(root, "d", `f${i}`), "w"));
    await assert.rejects(all(root, { maxEntries: 1000 }), (e: Error & { code?: string }) => {
      assert.equal(e.code, "E2BIG");
      assert.match(e.message, /more than 1000 entries, the most a folder sync lists/);
      return true;
    });
    const st = fs.statSync(path.join(root, "d"), { bigint: true });
    await assert.rejects(all(root, { forbidden: { dev: st.dev, ino: st.ino, refuse: (p) => new Error(`refused ${p}`) } }), /refused d/);
    let ticks = 0;
    let ticking = true;
    const tick = () => {
      ticks++;
      if (ticking) setImmediate(tick);
    };
    setImmediate(tick);
    const entries = await all(root);
    ticking = false;
    assert.equal(entries.length, 3001);
    assert.ok(ticks >= 5, `the walk yields to the event loop (${ticks} turns while it walked 3001 entries)`);
    const controller = new AbortController();
    controller.abort(new Error("stop"));
    await assert.rejects(all(root, { signal: controller.signal }), /stop/, "an abort ends the walk");
  });
});
