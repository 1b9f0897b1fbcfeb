/** --include / --exclude of a folder sync (util/path-filter.ts): its own globs, rsync's first match wins. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { compileGlob, filterRules, PathFilter } from "../src/util/path-filter.ts";

test("globs: * and ? within a name, ** across folders, classes, quoting, dotfiles like any name", { timeout: 10_000 }, () => {
  const m = (glob: string, path: string) => compileGlob(glob).test(path);
  assert.equal(m("*.img", "a.img"), true);
  assert.equal(m("*.img", ".hidden.img"), true, "no hidden-file exception");
  assert.equal(m("*", ".bashrc"), true);
  assert.equal(m("*.img", "a/b.img"), false, "* never crosses a /");
  assert.equal(m("vm?.img", "vm1.img"), true);
  assert.equal(m("vm?.img", "vm12.img"), false);
  assert.equal(m("a?b", "a/b"), false, "? never matches /");
  assert.equal(m("vms/**", "vms/a/b/c.img"), true);
  assert.equal(m("vms/**", "vms"), false);
  assert.equal(m("**/cache", "cache"), true, "**/ also matches no folder");
  assert.equal(m("**/cache", "x/y/cache"), true);
  assert.equal(m("a/**/z.img", "a/z.img"), true);
  assert.equal(m("a/**/z.img", "a/b/c/z.img"), true);
  assert.equal(m("a**z", "a/b/z"), true);
  assert.equal(m("vm[0-9].img", "vm7.img"), true);
  assert.equal(m("vm[0-9].img", "vmx.img"), false);
  assert.equal(m("vm[!0-9].img", "vmx.img"), true);
  assert.equal(m("vm[^0-9].img", "vm3.img"), false);
  assert.equal(m("a[!x]b", "a/b"), false, "a negated class never matches /");
  assert.equal(m("[]]x", "]x"), true, "] first in a class is itself");
  assert.equal(m("[a", "[a"), true, "an unclosed [ is itself");
  assert.equal(m("\\*.img", "*.img"), true);
  assert.equal(m("\\*.img", "a.img"), false);
  assert.equal(m("a.b", "axb"), false, "regex characters are literal");
  assert.equal(m("(x)+$", "(x)+$"), true);
});

test("rules: the first match wins, names at any depth, paths from the top, folders only", { timeout: 10_000 }, () => {
  const f = new PathFilter([
    { type: "include", pattern: "keep.tmp" },
    { type: "exclude", pattern: "*.tmp" },
    { type: "exclude", pattern: "cache/" },
    { type: "exclude", pattern: "/vms/old/*" },
    { type: "exclude", pattern: ".snapshots" },
  ]);
  assert.equal(f.excludes("a.tmp"), true);
  assert.equal(f.excludes("x/y/a.tmp"), true, "a name pattern matches at any depth");
  assert.equal(f.excludes("x/keep.tmp"), false, "an earlier --include wins");
  assert.equal(f.excludes("a.img"), false);
  assert.equal(f.excludes("x/cache", { folder: true }), true);
  assert.equal(f.excludes("x/cache"), false, "a folder-only pattern leaves a file of that name");
  assert.equal(f.excludes("vms/old/a.img"), true);
  assert.equal(f.excludes("other/vms/old/a.img"), false, "a path pattern starts at the top");
  assert.equal(f.excludes(".snapshots", { folder: true }), true, "dot names are matched");
  const reversed = new PathFilter([{ type: "exclude", pattern: "*.tmp" }, { type: "include", pattern: "keep.tmp" }]);
  assert.equal(reversed.excludes("keep.tmp"), true, "the first match wins: the later --include comes too late");
  const only = new PathFilter([{ type: "include", pattern: "*/" }, { type: "include", pattern: "*.img" }, { type: "exclude", pattern: "*" }]);
  assert.equal(only.excludes("a", { folder: true }), false);
  assert.equal(only.excludes("a/b/c.img"), false);
  assert.equal(only.excludes("a/b/c.txt"), true);
  assert.equal(new PathFilter().excludes("anything"), false);
  assert.throws(() => new PathFilter([{ type: "exclude", pattern: "" }]), /--exclude needs a pattern/);
});

test("rules keep the command line's order across --include and --exclude", { timeout: 10_000 }, () => {
  const argv = ["sync", "--exclude", "*.tmp", "--include=keep.tmp", "-n", "--exclude=cache/", "a/", "b/"];
  assert.deepEqual(filterRules(argv, { include: ["keep.tmp"], exclude: ["*.tmp", "cache/"] }), [
    { type: "exclude", pattern: "*.tmp" },
    { type: "include", pattern: "keep.tmp" },
    { type: "exclude", pattern: "cache/" },
  ]);
  assert.deepEqual(filterRules(["sync", "a/", "b/"], { include: ["x"], exclude: ["y"] }), [
    { type: "include", pattern: "x" },
    { type: "exclude", pattern: "y" },
  ], "values not on the command line: includes, then excludes");
});
