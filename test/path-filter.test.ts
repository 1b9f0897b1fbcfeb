/** --include / --exclude of a folder sync (util/path-filter.ts): the documented rule. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { PathFilter } from "../src/util/path-filter.ts";

test("path filter: names anywhere, paths from the top, folders only, includes win", { timeout: 10_000 }, () => {
  const f = new PathFilter({ exclude: ["*.tmp", "cache", "vms/old/**", "logs/"] });
  assert.equal(f.excludes("a.tmp"), true);
  assert.equal(f.excludes("x/y/a.tmp"), true, "a name pattern matches at any depth");
  assert.equal(f.excludes("a.img"), false);
  assert.equal(f.excludes("x/cache/a.img"), true, "below an excluded folder");
  assert.equal(f.excludes("vms/old/a.img"), true);
  assert.equal(f.excludes("other/vms/old/a.img"), false, "a path pattern starts at the top");
  assert.equal(f.excludes("logs"), false, "a folder-only pattern leaves a file of that name");
  assert.equal(f.excludes("logs/today.img"), true);
  assert.equal(f.prunes("cache"), true);
  assert.equal(new PathFilter().excludes("anything"), false);
  const only = new PathFilter({ exclude: ["*"], include: ["*.img"] });
  assert.equal(only.excludes("a/b/c.img"), false, "an --include wins over an --exclude, in any order");
  assert.equal(only.excludes("a/b/c.txt"), true);
  assert.equal(only.prunes("a"), false, "with includes, no folder is pruned");
});
