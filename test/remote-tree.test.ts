/**
 * `ssync push DIR/ HOST:DIR/` and `ssync pull HOST:DIR/ DIR/` (issue 11, with a listener),
 * through the real CLI against a listener in this process, whose counters say how many
 * connections and handshakes each command made (one):
 * 1. a tree of 20 sparse images pushed into a folder that does not exist yet, then changed,
 *    added to and deleted from, pushed again (the quick check reads nothing; changed files send
 *    only their blocks; nothing is deleted without --delete), then with --delete;
 * 2. the same tree pulled into an empty local folder, changed on the listener, pulled again;
 * 3. usage: a folder named without its slash, folder options on a file, a pull of a folder the
 *    listener does not have.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { WorkerPool } from "../src/engine/worker-pool.ts";
import { plannerEntry } from "../src/session/remote-tree-sync.ts";
import { planTree } from "../src/session/tree-plan.ts";
import { PathFilter } from "../src/util/path-filter.ts";
import { makeCliPair } from "./helpers/cli-setup.ts";
import { NOBODY, nobodyUnavailableReason } from "./helpers/as-nobody.ts";
import { runCli, startCliListener, startListener, type TestServer } from "./helpers/network.ts";
import { withTempDir } from "./helpers/sparse.ts";
import { assertSame, changeTree, type FileRow, makeTree, TREE } from "./helpers/tree-images.ts";

const KiB = 1024;
const T = { timeout: 300_000 };

interface Run {
  code: number | null;
  o: Record<string, unknown>;
  counts: Record<string, number>;
  files: Map<string, FileRow>;
  stderr: string;
  /** Connections and handshakes the listener saw during the command. */
  handshakes: number;
  connections: number;
}

async function withServer(body: (s: { dir: string; server: TestServer; client: string; remote: string }) => Promise<void>): Promise<void> {
  await withTempDir(async (dir) => {
    await using pool = new WorkerPool();
    const pair = await makeCliPair(dir, { keygen: false });
    const server = await startListener(dir, { pool, root: pair.root, authorizedKeysFile: path.join(pair.server, "ssync", "authorized_keys") });
    try {
      await body({ dir, server, client: pair.client, remote: `127.0.0.1:${server.listener.port}` });
    } finally {
      await server.listener.close();
    }
  });
}

async function cli(s: { server: TestServer; client: string }, args: string[]): Promise<Run> {
  const before = { ...s.server.listener.counters };
  const r = await runCli([...args, "--json", "--accept-new"], { config: s.client, timeoutMs: 120_000 });
  const after = s.server.listener.counters;
  const lines = r.stdout.trim().split("\n");
  assert.equal(lines.length, 1, `one JSON object; stdout ${r.stdout}; stderr ${r.stderr}`);
  const o = JSON.parse(lines[0]);
  return {
    code: r.code,
    o,
    counts: o.counts ?? {},
    files: new Map(((o.files ?? []) as FileRow[]).map((f) => [f.path, f])),
    stderr: r.stderr,
    handshakes: after.handshakes - before.handshakes,
    connections: after.connections - before.connections,
  };
}

const CHANGED = ["big.img", "a/b/deep2.img"];
const NEW = ["new1.img", "a/new2.img"];
const GONE = ["gone1.img", "c/gone2.img"];
const UNCHANGED = TREE.map(([p]) => p).filter((p) => !CHANGED.includes(p) && !GONE.includes(p));
const AFTER = [...TREE.map(([p]) => p).filter((p) => !GONE.includes(p)), ...NEW];

/** The second run after change(): changed ones send only their block, unchanged ones read nothing. */
function checkIncremental(r: Run): void {
  assert.equal(r.code, 0, r.stderr);
  for (const p of CHANGED) {
    const f = r.files.get(p)!;
    assert.equal(f.outcome, "synced", p);
    assert.ok(f.dataBytesSent > 0 && f.dataBytesSent <= 64 * KiB, `${p}: only the changed block sent (${f.dataBytesSent})`);
  }
  for (const p of NEW) assert.equal(r.files.get(p)?.outcome, "synced", p);
  for (const p of UNCHANGED) {
    const f = r.files.get(p)!;
    assert.equal(f.outcome, "quick-check", p);
    assert.equal(f.sourceBytesRead + f.destinationBytesRead, 0, `${p}: nothing read`);
  }
  assert.equal(r.counts.quickCheck, UNCHANGED.length);
  assert.deepEqual([r.connections, r.handshakes], [1, 1], "one connection, one handshake for the whole tree");
}

test("push DIR/ HOST:DIR/: 20 sparse images over one handshake; the quick check; only changed blocks; --delete", T, async () => {
  await withServer(async (s) => {
    const src = path.join(s.dir, "src");
    makeTree(src);
    const dst = path.join(s.server.root, "vms/images");
    fs.mkdirSync(path.dirname(dst));
    const first = await cli(s, ["push", `${src}/`, `${s.remote}:vms/images/`]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.o.mode, "push");
    assert.equal(first.counts.files, TREE.length);
    assert.deepEqual([first.connections, first.handshakes], [1, 1], "one connection, one handshake for the whole tree");
    for (const [p] of TREE) assertSame(src, dst, p);

    changeTree(src);
    const second = await cli(s, ["push", `${src}/`, `${s.remote}:vms/images/`]);
    checkIncremental(second);
    for (const p of AFTER) assertSame(src, dst, p);
    for (const p of GONE) assert.ok(fs.existsSync(path.join(dst, p)), `${p}: kept without --delete`);

    const dry = await cli(s, ["push", "-n", "--delete", `${src}/`, `${s.remote}:vms/images/`]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.deepEqual((dry.o.deleted as string[]).sort(), [...GONE].sort(), "a dry run lists what --delete would remove");
    for (const p of GONE) assert.ok(fs.existsSync(path.join(dst, p)), `${p}: a dry run removes nothing`);

    const third = await cli(s, ["push", "--delete", `${src}/`, `${s.remote}:vms/images/`]);
    assert.equal(third.code, 0, third.stderr);
    assert.equal(third.counts.quickCheck, AFTER.length, "nothing changed since: every file skipped");
    assert.equal(third.counts.deleted, GONE.length);
    for (const p of GONE) assert.equal(fs.existsSync(path.join(dst, p)), false, `${p}: removed by --delete`);
    for (const p of AFTER) assertSame(src, dst, p);
  });
});

test("pull HOST:DIR/ DIR/: the tree into an empty folder, then only what changed on the listener; --delete", T, async () => {
  await withServer(async (s) => {
    const remote = path.join(s.server.root, "images");
    makeTree(remote);
    const local = path.join(s.dir, "restore");
    const first = await cli(s, ["pull", `${s.remote}:images/`, `${local}/`]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.o.mode, "pull");
    assert.deepEqual([first.connections, first.handshakes], [1, 1]);
    for (const [p] of TREE) assertSame(remote, local, p);

    changeTree(remote);
    const second = await cli(s, ["pull", `${s.remote}:images/`, `${local}/`]);
    checkIncremental(second);
    for (const p of AFTER) assertSame(remote, local, p);
    for (const p of GONE) assert.ok(fs.existsSync(path.join(local, p)), `${p}: kept without --delete`);

    const third = await cli(s, ["pull", "--delete", `${s.remote}:images/`, `${local}/`]);
    assert.equal(third.code, 0, third.stderr);
    assert.equal(third.counts.deleted, GONE.length);
    for (const p of GONE) assert.equal(fs.existsSync(path.join(local, p)), false, `${p}: removed by --delete`);
  });
});

test("a listener folder swapped for a link: never followed, and pull --delete keeps what lies below it locally", T, async () => {
  await withServer(async (s) => {
    const remote = path.join(s.server.root, "images");
    fs.mkdirSync(path.join(remote, "locked"), { recursive: true });
    fs.writeFileSync(path.join(remote, "locked/inside.img"), "x");
    fs.writeFileSync(path.join(remote, "top.img"), "top");
    const local = path.join(s.dir, "restore");
    const first = await cli(s, ["pull", `${s.remote}:images/`, `${local}/`]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(fs.readFileSync(path.join(local, "locked/inside.img"), "utf8"), "x");
    // The listener can no longer walk it: a folder swapped for a link to elsewhere.
    fs.rmSync(path.join(remote, "locked"), { recursive: true });
    fs.mkdirSync(path.join(s.dir, "elsewhere"));
    fs.symlinkSync(path.join(s.dir, "elsewhere"), path.join(remote, "locked"));
    const second = await cli(s, ["pull", "--delete", `${s.remote}:images/`, `${local}/`]);
    assert.equal(fs.readFileSync(path.join(local, "locked/inside.img"), "utf8"), "x", "not deleted through a link the listener will not follow");
    assert.equal(second.code, 0, second.stderr);
    assert.ok(second.files.get("top.img"), "the rest of the tree still synced");
  });
});

test("a listener folder readable but not searchable is unlisted, not empty: pull --delete keeps the local files and names the folder", { ...T, skip: nobodyUnavailableReason() || false }, async () => {
  await withTempDir(async (dir) => {
    fs.chmodSync(dir, 0o755); // user nobody reaches its root and config
    const pair = await makeCliPair(dir, { keygen: false });
    const locked = path.join(pair.root, "data", "locked");
    fs.mkdirSync(locked, { recursive: true });
    fs.writeFileSync(path.join(pair.root, "data", "top.txt"), "top");
    fs.writeFileSync(path.join(locked, "a.txt"), "a");
    fs.writeFileSync(path.join(locked, "b.txt"), "b");
    const home = path.join(dir, "nobody-home");
    fs.mkdirSync(home);
    for (const p of [home, pair.root, path.join(pair.root, "data"), locked, pair.server, path.join(pair.server, "ssync"), path.join(pair.server, "ssync", "authorized_keys")]) fs.chownSync(p, NOBODY, NOBODY);
    // The listener runs as nobody: root would search a folder whatever its mode.
    const listener = await startCliListener(["--root", pair.root], {
      config: pair.server,
      env: { HOME: home, DENO_DIR: path.join(home, "deno-cache") },
      uid: NOBODY,
      gid: NOBODY,
    });
    try {
      const remote = `127.0.0.1:${listener.port}:data/`;
      const local = path.join(dir, "local");
      const first = await runCli(["pull", "--accept-new", remote, `${local}/`], { config: pair.client, timeoutMs: 60_000 });
      assert.equal(first.code, 0, first.stderr);
      assert.equal(fs.readFileSync(path.join(local, "locked", "a.txt"), "utf8"), "a");
      fs.chmodSync(locked, 0o444); // readable, not searchable: readdir works, every lstat fails EACCES
      const second = await runCli(["pull", "--delete", remote, `${local}/`], { config: pair.client, timeoutMs: 60_000 });
      assert.equal(second.code, 1, second.stderr);
      assert.match(second.stderr, /locked\/[ab]\.txt: the listener could not list this folder/);
      assert.equal(fs.readFileSync(path.join(local, "locked", "a.txt"), "utf8"), "a", "kept: the listener could not say it is gone");
      assert.equal(fs.readFileSync(path.join(local, "locked", "b.txt"), "utf8"), "b");
      assert.equal(fs.readFileSync(path.join(local, "top.txt"), "utf8"), "top");
    } finally {
      fs.chmodSync(locked, 0o755);
      await listener.stop();
    }
  });
});

test("an unlisted folder (the listener could not walk it) is a folder with an error: nothing below it is deleted", () => {
  const source = [plannerEntry({ kind: "unlisted", size: 0, mtimeNs: 0n, name: "locked" }), plannerEntry({ kind: "file", size: 1, mtimeNs: 1n, name: "top.img" })];
  assert.equal(source[0].kind, "folder");
  assert.ok(source[0].error, "carries an error: never absent, never empty");
  const destination = [
    { path: "locked", kind: "folder" as const, size: 0, mtimeNs: 0n },
    { path: "locked/inside.img", kind: "file" as const, size: 1, mtimeNs: 1n },
    { path: "top.img", kind: "file" as const, size: 1, mtimeNs: 1n },
  ];
  const plan = planTree(source, destination, { checksum: false, delete: true, filter: new PathFilter([]), owner: false, destinationMissing: false });
  assert.deepEqual(plan.actions.filter((a) => a.type === "delete" || a.type === "rmdir"), [], "nothing deleted below it");
});

test("usage: a folder without its slash, folder options on a file, a pull of a folder the listener lacks", T, async () => {
  await withServer(async (s) => {
    const src = path.join(s.dir, "src");
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, "a.img"), "a");
    const noSlash = await runCli(["push", src, `${s.remote}:x/`], { config: s.client });
    assert.equal(noSlash.code, 2, noSlash.stderr);
    assert.match(noSlash.stderr, /trailing slash/);
    const fileWithDelete = await runCli(["push", "--delete", path.join(src, "a.img"), `${s.remote}:a.img`], { config: s.client });
    assert.equal(fileWithDelete.code, 2, fileWithDelete.stderr);
    assert.match(fileWithDelete.stderr, /--delete is for a folder push only/);
    const missing = await cli(s, ["pull", `${s.remote}:nothing-here/`, `${path.join(s.dir, "out")}/`]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /nothing-here/);
    assert.equal(fs.existsSync(path.join(s.server.root, "nothing-here")), false, "nothing created on the listener");
  });
});
