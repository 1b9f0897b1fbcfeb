/**
 * The folder sync's planner (session/tree-plan.ts), pure: entry lists in, actions out. What
 * the review of the first folder sync found: an unreadable entry never taken for absent, a
 * link in the destination never written through, deletions only of what the source lacks and
 * only folders that end up empty, the rsync order of filter rules.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import type { TreeEntry, TreeEntryKind } from "../src/storage/tree-entry.ts";
import { type PlanOptions, planTree, type TreeAction } from "../src/session/tree-plan.ts";
import { PathFilter } from "../src/util/path-filter.ts";

function e(path: string, kind: TreeEntryKind = "file", more: Partial<TreeEntry> = {}): TreeEntry {
  return { path, kind, size: kind === "file" ? 100 : 0, mtimeNs: 1_000_000_007n, ...more };
}

const NONE: PlanOptions = { checksum: false, delete: false, filter: new PathFilter() };

function shown(actions: readonly TreeAction[]): string[] {
  return actions.map((a) => {
    switch (a.type) {
      case "sync":
        return `sync ${a.path} ${a.reason}${a.newFolder ? " (new folder)" : ""}`;
      case "fail":
        return `fail ${a.path} ${a.side} ${a.error.code}`;
      case "skip":
        return `skip ${a.path} ${a.kind}`;
      case "delete":
        return `delete ${a.path} ${a.kind}`;
      default:
        return `${a.type} ${a.path}`;
    }
  });
}

test("plan: new, changed and unchanged files, folders made, kinds skipped", { timeout: 10_000 }, () => {
  const src = [
    e("a", "folder"),
    e("a/new.img"),
    e("a/same.img"),
    e("b", "folder"),
    e("b/in-new.img"),
    e("grown.img", "file", { size: 200 }),
    e("link", "symlink"),
    e("node", "block-device"),
    e("pipe", "other"),
    e("touched.img", "file", { mtimeNs: 1_000_000_008n }),
    e("unchanged.img"),
    e("was-cut.img"),
  ];
  const dst = [e("a", "folder"), e("a/same.img"), e("grown.img"), e("touched.img"), e("unchanged.img"), e("was-cut.img", "file", { pending: true })];
  const plan = planTree(src, dst, NONE);
  assert.deepEqual(shown(plan.actions), [
    "sync a/new.img new",
    "quick-check a/same.img",
    "mkdir b",
    "sync b/in-new.img new (new folder)",
    "sync grown.img size",
    "skip link symlink",
    "skip node block-device",
    "skip pipe other",
    "sync touched.img mtime",
    "quick-check unchanged.img",
    "sync was-cut.img pending",
  ]);
  assert.deepEqual([plan.totals.files, plan.totals.bytes, plan.totals.sync, plan.totals.quickCheck, plan.totals.skipped], [7, 800, 5, 2, 3]);
  const checksum = planTree(src, dst, { ...NONE, checksum: true });
  assert.equal(checksum.totals.quickCheck, 0, "--checksum: no quick check");
  const perms = planTree([e("f.img", "file", { mode: 0o644 })], [e("f.img", "file", { mode: 0o600 })], { ...NONE, perms: { destinationMode: (m) => m } });
  assert.deepEqual(shown(perms.actions), ["sync f.img attributes"], "a mode to set: no quick check");
  const missing = planTree([e("top.img")], [], { ...NONE, destinationMissing: true });
  assert.deepEqual(shown(missing.actions), ["sync top.img new (new folder)"], "a missing destination root: every file in a new folder");
});

test("plan: a link or an unreadable entry in the destination fails the file, never followed, never taken for absent", { timeout: 10_000 }, () => {
  const unreadable = { code: "EACCES", message: "Cannot read the folder dst/locked: permission denied" };
  const src = [
    e("evil", "folder"),
    e("evil/deep", "folder"),
    e("evil/deep/planted.img"),
    e("f-link.img"),
    e("f-dir.img"),
    e("f-err.img"),
    e("locked", "folder"),
    e("locked/x.img"),
    e("notdir", "folder"),
    e("notdir/y.img"),
    e("ok.img"),
  ];
  const dst = [
    e("evil", "symlink"),
    e("f-dir.img", "folder"),
    e("f-err.img", "other", { error: { code: "EIO", message: "Cannot read dst/f-err.img: input/output error" } }),
    e("f-link.img", "symlink"),
    e("locked", "folder", { error: unreadable }),
    e("notdir", "file"),
  ];
  const plan = planTree(src, dst, { ...NONE, delete: true });
  assert.deepEqual(shown(plan.actions), [
    "fail evil/deep/planted.img destination ELOOP",
    "fail f-link.img destination ELOOP",
    "fail f-dir.img destination EISDIR",
    "fail f-err.img destination EIO",
    "fail locked/x.img destination EACCES",
    "fail notdir/y.img destination ENOTDIR",
    "sync ok.img new",
  ]);
  const planted = plan.actions.find((a) => a.path === "evil/deep/planted.img");
  assert.match(planted!.type === "fail" ? planted!.error.message : "", /evil is a symbolic link in the destination, which a folder sync never follows/);
  assert.equal(plan.actions.some((a) => a.type === "delete" || a.type === "rmdir"), false, "nothing the source has is deleted");
});

test("plan --delete: what the source lacks, links themselves, folders only when emptied; excluded, pending and unreadable kept", { timeout: 10_000 }, () => {
  const src = [e("a", "folder"), e("a/keep.img"), e("b", "folder"), e("src-unreadable", "folder", { error: { code: "EACCES", message: "no" } })];
  const dst = [
    e("a", "folder"),
    e("a/gone.img"),
    e("a/keep.img"),
    e("a/mine.tmp"),
    e("b", "symlink"),
    e("escape", "symlink"),
    e("old", "folder"),
    e("old/sub", "folder"),
    e("old/sub/x.img"),
    e("half", "folder"),
    e("half/x.img"),
    e("half/busy.img", "file", { pending: true }),
    e("junk", "folder", { error: { code: "EACCES", message: "Cannot read the folder dst/junk: permission denied" } }),
    e("src-unreadable", "folder"),
    e("src-unreadable/x.img"),
    e("excluded", "folder"),
  ];
  const filter = new PathFilter([{ type: "exclude", pattern: "*.tmp" }, { type: "exclude", pattern: "excluded/" }]);
  const plan = planTree(src, dst, { ...NONE, delete: true, filter });
  const removals = shown(plan.actions.filter((a) => a.type === "delete" || a.type === "rmdir" || a.type === "keep"));
  assert.deepEqual([...removals].sort(), [
    "keep junk",
    "keep half/busy.img",
    "delete half/x.img file",
    "keep half",
    "rmdir old/sub",
    "delete old/sub/x.img file",
    "rmdir old",
    "delete escape symlink",
    "delete a/gone.img file",
  ].sort());
  // Children before their folder.
  assert.ok(removals.indexOf("delete old/sub/x.img file") < removals.indexOf("rmdir old/sub"));
  assert.ok(removals.indexOf("rmdir old/sub") < removals.indexOf("rmdir old"));
  assert.ok(removals.indexOf("delete half/x.img file") < removals.indexOf("keep half"));
  for (const p of ["a/keep.img", "a/mine.tmp", "b", "src-unreadable", "src-unreadable/x.img", "excluded", "a"]) {
    assert.equal(removals.some((r) => r.endsWith(` ${p}`) || r.includes(` ${p} `)), false, `${p}: untouched`);
  }
  assert.equal(plan.totals.failed, 1, "the unreadable source folder is a failure (so the executor deletes nothing)");
  assert.deepEqual(shown(planTree(src, dst, { ...NONE, filter }).actions).filter((a) => /^(delete|rmdir|keep)/.test(a)), [], "no --delete: nothing removed");
});

test("plan: an excluded folder's contents are never looked at, on either side", { timeout: 10_000 }, () => {
  const filter = new PathFilter([{ type: "include", pattern: "cache/keep.img" }, { type: "exclude", pattern: "cache/" }]);
  const plan = planTree([e("cache", "folder"), e("cache/keep.img"), e("x.img")], [e("cache", "folder"), e("cache/old.img")], { ...NONE, delete: true, filter });
  assert.deepEqual(shown(plan.actions), ["sync x.img new"]);
  assert.equal(plan.totals.excluded, 1);
});
