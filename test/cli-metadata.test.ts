/**
 * File metadata (issue 10, scope 7): the destination takes the source's permission bits and
 * mtime, to the nanosecond, at commit — push and pull, new and updated files, `ssync sync` —
 * and an identical rerun still fixes (and reports) a wrong mode or mtime.
 *
 * 1. `ssync sync`: new, updated, identical rerun, u+rw kept, setuid/setgid/sticky dropped,
 *    --inplace, --no-times/--no-perms, --owner as root; a block device, either side, never touched.
 * 2. push and pull over a real listener: new, updated, identical rerun, --no-times/--no-perms,
 *    --owner (a pull as root applies it; a listener never does, and the summary says so).
 * 3. A listener that predates OPEN_METADATA (it closes on the unknown flag): a clear error
 *    naming the way out; with --no-times --no-perms the flag is not sent.
 * 4. A raw client: a setuid/setgid mode and an owner it sends are never applied; an OPEN
 *    without the flag (an older client) still syncs and leaves metadata alone. The listener
 *    runs in this process, so this checks the ns mtime on the test's own runtime (Deno, Node).
 * 5. The writer's umask bounds the mode, new and existing files: a listener under umask 077
 *    makes 0600 of a 0644 source, and so does `ssync sync`; a pull under umask 022 makes 0755
 *    of a listener's 0777. An exported regular file keeps its own mode and mtime: a listener
 *    grants no metadata there.
 *
 * The expectations assume the tests' umask is 022 (a 0640 source stays 0640); section 5 sets
 * the umask of the processes it starts.
 *
 * Modes and times are read with stat(1) (%.9Y: Deno's node:fs rounds mtimes to ms).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import process from "node:process";
import { decode, encode } from "../protocol/codec.ts";
import { HEADER_SIZE, OPEN_METADATA } from "../protocol/constants.ts";
import type { Message } from "../protocol/messages.ts";
import { RootHash } from "../src/engine/root-hash.ts";
import { WorkerPool } from "../src/engine/worker-pool.ts";
import { generateKeyPair } from "../src/noise/x25519.ts";
import { type CliSetup, makeCliPair, withCliSetup } from "./helpers/cli-setup.ts";
import { authorize, runCli, startCliListener, startListener } from "./helpers/network.ts";
import { startFakeListener } from "./helpers/fake-listener.ts";
import { nextMessage, openMessage, rawConnect } from "./helpers/raw-client.ts";
import { loopDeviceUnavailableReason, withLoopDevice } from "./helpers/loop-device.ts";
import { withTempDir } from "./helpers/sparse.ts";

const T = { timeout: 180_000 };
/** 2020-01-02 03:04:05.123456789 UTC. */
const MTIME = "1577934245.123456789";
const MTIME_NS = 1577934245_123456789n;
const OLD = "1000.500000000";
const NOBODY = 65534;
const isRoot = typeof process.getuid === "function" && process.getuid() === 0;

interface Meta {
  mode: string;
  uid: number;
  gid: number;
  mtime: string;
}

function meta(file: string): Meta {
  const [mode, uid, gid, mtime] = execFileSync("stat", ["-c", "%a %u %g %.9Y", file], { encoding: "utf8" }).trim().split(" ");
  return { mode, uid: Number(uid), gid: Number(gid), mtime };
}

function stamp(file: string, o: { mode?: number; mtime?: string } = {}): void {
  fs.chmodSync(file, o.mode ?? 0o640);
  execFileSync("touch", ["-m", "-d", `@${o.mtime ?? MTIME}`, file]);
}

/** `size` bytes of a pattern that `seed` changes. */
function writeImage(file: string, seed: number, size = 200_000): void {
  const b = new Uint8Array(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + seed) & 0xff;
  fs.writeFileSync(file, b);
}

function json(r: { code: number | null; stdout: string; stderr: string }): Record<string, unknown> {
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

describe("ssync sync: metadata", () => {
  test("new, updated and identical: mode 0640 and the ns mtime arrive; --no-times/--no-perms leave them", T, async () => {
    await withTempDir(async (dir) => {
      const config = path.join(dir, "config");
      const src = path.join(dir, "src.img");
      const dst = path.join(dir, "dst.img");
      const sync = async (...flags: string[]) => json(await runCli(["sync", "--json", ...flags, src, dst], { config }));
      writeImage(src, 1);
      stamp(src);

      let s = await sync();
      assert.deepEqual([meta(dst).mode, meta(dst).mtime], ["640", MTIME], "new file");
      assert.deepEqual([s.metadataApplied, s.metadataChanged], [["mode", "mtime"], ["mode", "mtime"]]);

      writeImage(src, 2);
      stamp(src);
      stamp(dst, { mode: 0o600, mtime: OLD });
      s = await sync();
      assert.ok((s.blocksSent as number) > 0);
      assert.equal(meta(dst).mode, "640", "updated file");
      assert.equal(meta(dst).mtime, MTIME, "updated file");

      // An identical rerun sends nothing and still fixes (and reports) a wrong mode and mtime.
      stamp(dst, { mode: 0o604, mtime: OLD });
      s = await sync();
      assert.equal(s.blocksSent, 0);
      assert.equal(s.bytesWritten, 0);
      assert.deepEqual(s.metadataChanged, ["mode", "mtime"]);
      assert.deepEqual([meta(dst).mode, meta(dst).mtime], ["640", MTIME]);
      s = await sync();
      assert.deepEqual(s.metadataChanged, [], "nothing left to change");
      const text = await runCli(["sync", src, dst], { config });
      assert.match(text.stdout, /already identical.*\n(.*\n)* {2}metadata {2}mode, mtime \(unchanged\)/);

      // --no-times/--no-perms: a data change leaves the mode, and the mtime is the write's, not the source's.
      writeImage(src, 3);
      stamp(src);
      stamp(dst, { mode: 0o600, mtime: OLD });
      s = await sync("--no-times", "--no-perms");
      assert.ok((s.blocksSent as number) > 0);
      assert.deepEqual(s.metadataApplied, []);
      assert.equal(meta(dst).mode, "600");
      assert.notEqual(meta(dst).mtime, MTIME);
      assert.notEqual(meta(dst).mtime, OLD);
      stamp(dst, { mode: 0o600, mtime: OLD });
      await sync("--no-times", "--no-perms"); // identical: nothing at all changes
      assert.deepEqual([meta(dst).mode, meta(dst).mtime], ["600", OLD]);
      await sync("--no-times"); // the mode only
      assert.deepEqual([meta(dst).mode, meta(dst).mtime], ["640", OLD]);
      stamp(dst, { mode: 0o600, mtime: OLD });
      await sync("--no-perms"); // the mtime only
      assert.deepEqual([meta(dst).mode, meta(dst).mtime], ["600", MTIME]);
    });
  });

  test("setuid, setgid and sticky never arrive; u+rw always does; --inplace too", T, async () => {
    await withTempDir(async (dir) => {
      const config = path.join(dir, "config");
      const src = path.join(dir, "src.img");
      const dst = path.join(dir, "dst.img");
      writeImage(src, 1);
      stamp(src, { mode: 0o7755 });
      json(await runCli(["sync", "--json", src, dst], { config }));
      assert.equal(meta(dst).mode, "755");
      stamp(src, { mode: 0o444 });
      const s = json(await runCli(["sync", "--json", src, dst], { config }));
      assert.equal(meta(dst).mode, "644", "the writer keeps read and write access for the next sync");
      assert.deepEqual(s.metadataChanged, ["mode"]);
      assert.deepEqual(json(await runCli(["sync", "--json", src, dst], { config })).metadataChanged, [], "0444 → 0644 is a fixed point");

      // --inplace (no journal, no partial file): new and updated.
      const inplace = path.join(dir, "inplace.img");
      json(await runCli(["sync", "--json", "--inplace", src, inplace], { config }));
      assert.deepEqual([meta(inplace).mode, meta(inplace).mtime], ["644", MTIME], "--inplace, new");
      writeImage(src, 9);
      stamp(src);
      const u = json(await runCli(["sync", "--json", "--inplace", src, inplace], { config }));
      assert.ok((u.blocksSent as number) > 0);
      assert.deepEqual([meta(inplace).mode, meta(inplace).mtime], ["640", MTIME], "--inplace, updated");
    });
  });

  test("--owner as root gives the destination the source's owner and group", { ...T, skip: isRoot ? false : "needs root to chown" }, async () => {
    await withTempDir(async (dir) => {
      const config = path.join(dir, "config");
      const src = path.join(dir, "src.img");
      const dst = path.join(dir, "dst.img");
      writeImage(src, 1);
      stamp(src);
      fs.chownSync(src, NOBODY, NOBODY);
      let s = json(await runCli(["sync", "--json", src, dst], { config }));
      assert.deepEqual([meta(dst).uid, meta(dst).gid], [0, 0], "without --owner the writer owns it");
      assert.deepEqual(s.metadataApplied, ["mode", "mtime"]);
      s = json(await runCli(["sync", "--json", "--owner", src, dst], { config }));
      assert.deepEqual([meta(dst).uid, meta(dst).gid], [NOBODY, NOBODY]);
      assert.deepEqual([s.metadataApplied, s.metadataChanged], [["mode", "mtime", "owner"], ["owner"]]);
    });
  });

  test("a block device is never touched, and the summary says so", T, async (t) => {
    const why = loopDeviceUnavailableReason();
    if (why) return t.skip(why);
    await withTempDir(async (dir) => {
      const config = path.join(dir, "config");
      const backing = path.join(dir, "backing.img");
      const src = path.join(dir, "src.img");
      const back = path.join(dir, "back.img");
      fs.writeFileSync(backing, new Uint8Array(1 << 20));
      writeImage(src, 1, 1 << 20);
      stamp(src);
      const ran = await withLoopDevice(backing, async (dev) => {
        const before = meta(dev);
        let s = json(await runCli(["sync", "--json", src, dev], { config }));
        // Writing through the node moves its mtime (devtmpfs); it never becomes the source's.
        assert.deepEqual({ ...meta(dev), mtime: "" }, { ...before, mtime: "" }, "the device node's mode and owner");
        assert.notEqual(meta(dev).mtime, MTIME);
        assert.deepEqual(s.metadataApplied, []);
        assert.ok((s.warnings as string[]).some((w) => /the destination is a block device: a block device's mode, times and owner are never touched/.test(w)), String(s.warnings));
        s = json(await runCli(["sync", "--json", dev, back], { config }));
        assert.deepEqual(s.metadataApplied, []);
        assert.ok((s.warnings as string[]).some((w) => /the source is a block device: a block device's mode/.test(w)), String(s.warnings));
        assert.equal(meta(back).mode, "600", "a file synced from a device keeps the mode it was made with");
        return true;
      });
      if (ran === null) return t.skip("losetup failed here");
    });
  });
});

describe("push and pull: metadata", () => {
  test("push and pull, new and updated: mode and ns mtime arrive; an identical rerun fixes them; --no-times/--no-perms; --owner", T, async () => {
    await withCliSetup({ pinHostKey: true }, async (s: CliSetup) => {
      const cli = async (...args: string[]) => json(await runCli([args[0], "--json", ...args.slice(1)], { config: s.client }));
      const src = path.join(s.dir, "src.img");
      const remoteFile = path.join(s.root, "vm.img");
      writeImage(src, 1);
      stamp(src);

      // push new, push updated
      let r = await cli("push", src, `${s.remote}:vm.img`);
      assert.deepEqual([meta(remoteFile).mode, meta(remoteFile).mtime], ["640", MTIME], "push new");
      assert.deepEqual(r.metadataChanged, ["mode", "mtime"]);
      writeImage(src, 2);
      stamp(src);
      stamp(remoteFile, { mode: 0o600, mtime: OLD });
      r = await cli("push", src, `${s.remote}:vm.img`);
      assert.ok((r.blocksSent as number) > 0);
      assert.deepEqual([meta(remoteFile).mode, meta(remoteFile).mtime], ["640", MTIME], "push update");

      // identical rerun: fixed and reported; a dry run reports without changing
      stamp(remoteFile, { mode: 0o600, mtime: OLD });
      r = await cli("push", "--dry-run", src, `${s.remote}:vm.img`);
      assert.deepEqual(r.metadataChanged, ["mode", "mtime"]);
      assert.deepEqual([meta(remoteFile).mode, meta(remoteFile).mtime], ["600", OLD], "a dry run changes nothing");
      r = await cli("push", "--no-times", "--no-perms", src, `${s.remote}:vm.img`);
      assert.deepEqual([meta(remoteFile).mode, meta(remoteFile).mtime], ["600", OLD], "--no-times --no-perms");
      r = await cli("push", src, `${s.remote}:vm.img`);
      assert.equal(r.blocksSent, 0);
      assert.deepEqual(r.metadataChanged, ["mode", "mtime"]);
      assert.deepEqual([meta(remoteFile).mode, meta(remoteFile).mtime], ["640", MTIME], "push identical rerun");

      // --owner is asked of the listener, which never grants it: said, not silent.
      if (isRoot) fs.chownSync(src, NOBODY, NOBODY);
      r = await cli("push", "--owner", src, `${s.remote}:vm.img`);
      assert.deepEqual(r.metadataApplied, ["mode", "mtime"]);
      assert.ok((r.warnings as string[]).some((w) => /owner and group not applied: a listener never sets them/.test(w)), String(r.warnings));
      assert.equal(meta(remoteFile).uid, process.getuid?.() ?? meta(remoteFile).uid);

      // pull new, pull updated
      const served = path.join(s.root, "srv.img");
      const local = path.join(s.dir, "pulled.img");
      writeImage(served, 5);
      stamp(served);
      r = await cli("pull", `${s.remote}:srv.img`, local);
      assert.deepEqual([meta(local).mode, meta(local).mtime], ["640", MTIME], "pull new");
      writeImage(served, 6);
      stamp(served);
      stamp(local, { mode: 0o600, mtime: OLD });
      r = await cli("pull", `${s.remote}:srv.img`, local);
      assert.ok((r.blocksSent as number) > 0);
      assert.deepEqual([meta(local).mode, meta(local).mtime], ["640", MTIME], "pull update");
      stamp(local, { mode: 0o600, mtime: OLD });
      r = await cli("pull", "--no-times", "--no-perms", `${s.remote}:srv.img`, local);
      assert.deepEqual([meta(local).mode, meta(local).mtime], ["600", OLD], "pull --no-times --no-perms");
      r = await cli("pull", `${s.remote}:srv.img`, local);
      assert.deepEqual([r.blocksSent, r.metadataChanged], [0, ["mode", "mtime"]]);
      assert.deepEqual([meta(local).mode, meta(local).mtime], ["640", MTIME], "pull identical rerun");

      if (isRoot) {
        // A pull as root applies the listener's numeric owner with --owner, only then.
        fs.chownSync(served, NOBODY, NOBODY);
        r = await cli("pull", `${s.remote}:srv.img`, local);
        assert.deepEqual([meta(local).uid, meta(local).gid], [0, 0]);
        r = await cli("pull", "--owner", `${s.remote}:srv.img`, local);
        assert.deepEqual([meta(local).uid, meta(local).gid], [NOBODY, NOBODY]);
        assert.deepEqual(r.metadataChanged, ["owner"]);
      }
    });
  });

  test("a listener that predates OPEN_METADATA: a clear error naming the way out; --no-times --no-perms does not ask", T, async () => {
    await withTempDir(async (dir) => {
      const pair = await makeCliPair(dir, { keygen: false });
      const flags: number[] = [];
      // What an older listener's decode does: unknown OPEN flags are a violation, the connection is dropped.
      const old = await startFakeListener({
        serve: async (conn, socket) => {
          const rec = await conn.channel.receive();
          if (rec === null) return;
          const f = new DataView(rec.buffer, rec.byteOffset).getUint32(HEADER_SIZE + 8);
          flags.push(f);
          if (f & OPEN_METADATA) {
            socket.destroy();
            return;
          }
          await conn.channel.send(encode({ type: "ERROR", cookie: decode(rec).cookie, code: "EIO", message: "old listener reached" }));
          conn.channel.close();
        },
      });
      try {
        const src = path.join(dir, "src.img");
        writeImage(src, 1);
        const remote = `127.0.0.1:${old.port}`;
        const common = ["--host-key", old.fingerprint];
        for (const args of [["push", src, `${remote}:x.img`], ["pull", `${remote}:x.img`, path.join(dir, "p.img")]]) {
          const r = await runCli([args[0], ...common, ...args.slice(1)], { config: pair.client });
          assert.equal(r.code, 1, r.stderr);
          assert.match(r.stderr, /a listener that predates mode and mtime support does that; update it, or pass --no-times --no-perms/);
          const again = await runCli([args[0], ...common, "--no-times", "--no-perms", ...args.slice(1)], { config: pair.client });
          assert.match(again.stderr, /remote: old listener reached/);
        }
        assert.deepEqual(flags.map((f) => (f & OPEN_METADATA) !== 0), [true, false, true, false]);
        assert.ok(!fs.existsSync(path.join(dir, "p.img")));
      } finally {
        await old.close();
      }
    });
  });
});

describe("a raw client: metadata the listener takes", () => {
  async function session(
    conn: Awaited<ReturnType<typeof rawConnect>>,
    open: Message,
  ): Promise<{ ok: Message | null; done: Message | null }> {
    await conn.channel.send(encode(open));
    const ok = await nextMessage(conn);
    if (ok?.type !== "OPEN_OK") return { ok, done: null };
    await conn.channel.send(encode({ type: "COMMIT", cookie: 2, root: new RootHash(new Uint8Array(32)).finish(0, 4096) }));
    return { ok, done: await nextMessage(conn) };
  }

  test("setuid/setgid and an owner sent by a client are never applied; an OPEN without OPEN_METADATA leaves metadata alone", T, async () => {
    await withTempDir(async (dir) => {
      const pool = new WorkerPool();
      const server = await startListener(dir, { pool });
      try {
        const key = generateKeyPair();
        authorize(server.authorizedKeys, key);
        // A new (empty) file, with everything a hostile client could ask for.
        let conn = await rawConnect(server, key, dir);
        const hostile = { mode: 0o6777, mtimeNs: MTIME_NS, owner: { uid: NOBODY, gid: NOBODY } };
        let r = await session(conn, { ...openMessage({ mode: "push", name: "new.img", size: 0, dryRun: false }), metadata: hostile });
        await conn[Symbol.asyncDispose]();
        assert.equal(r.done?.type, "COMMIT_OK", JSON.stringify(r.done));
        assert.equal(r.ok?.type === "OPEN_OK" && r.ok.metadata?.owner, undefined, "owner not granted");
        const made = meta(path.join(server.root, "new.img"));
        // This process's umask (022 where the tests run) takes go+w from the 0777 left.
        assert.deepEqual([made.mode, made.mtime], ["755", MTIME], "no setuid, setgid or sticky, nor what the umask masks; the mtime to the ns");
        assert.equal(made.uid, process.getuid?.() ?? made.uid, "the listener's own user keeps the file");

        // An existing file and an older client's OPEN (no OPEN_METADATA): nothing but the data changes.
        const existing = path.join(server.root, "old.img");
        fs.writeFileSync(existing, "");
        stamp(existing, { mode: 0o604, mtime: OLD });
        conn = await rawConnect(server, key, dir);
        r = await session(conn, openMessage({ mode: "push", name: "old.img", size: 0, dryRun: false }));
        await conn[Symbol.asyncDispose]();
        assert.equal(r.done?.type, "COMMIT_OK");
        assert.equal(r.ok?.type === "OPEN_OK" && r.ok.metadata, undefined, "no CAP_METADATA for an older client");
        assert.deepEqual([meta(existing).mode, meta(existing).mtime], ["604", OLD]);

        // The same file with OPEN_METADATA: OPEN_OK tells its values before; the commit sets the new ones.
        conn = await rawConnect(server, key, dir);
        r = await session(conn, { ...openMessage({ mode: "push", name: "old.img", size: 0, dryRun: false }), metadata: { mode: 0o4640, mtimeNs: MTIME_NS } });
        await conn[Symbol.asyncDispose]();
        assert.equal(r.done?.type, "COMMIT_OK");
        assert.deepEqual(r.ok?.type === "OPEN_OK" && r.ok.metadata, { mode: 0o604, mtimeNs: 1000_500000000n });
        assert.deepEqual([meta(existing).mode, meta(existing).mtime], ["640", MTIME]);
      } finally {
        await server.listener.close();
        await pool[Symbol.asyncDispose]();
      }
    });
  });
});

describe("the writer's umask and exports", () => {
  test("a listener under umask 077 gives 0600 for a 0644 source, new and existing; a pull under umask 022 gives 0755 for 0777", T, async () => {
    await withCliSetup({ pinHostKey: true, umask: 0o077 }, async (s: CliSetup) => {
      const cli = async (...args: string[]) => json(await runCli([args[0], "--json", ...args.slice(1)], { config: s.client, umask: 0o022 }));
      const src = path.join(s.dir, "src.img");
      const remoteFile = path.join(s.root, "vm.img");
      writeImage(src, 1);
      stamp(src, { mode: 0o644 });
      await cli("push", src, `${s.remote}:vm.img`);
      assert.deepEqual([meta(remoteFile).mode, meta(remoteFile).mtime], ["600", MTIME], "new file: the listener's umask 077 takes go+r");

      // Existing, data changed, and existing, data identical: the umask bounds both.
      writeImage(src, 2);
      stamp(src, { mode: 0o644 });
      stamp(remoteFile, { mode: 0o640, mtime: OLD });
      const r = await cli("push", src, `${s.remote}:vm.img`);
      assert.ok((r.blocksSent as number) > 0);
      assert.deepEqual([meta(remoteFile).mode, meta(remoteFile).mtime], ["600", MTIME], "existing file, updated");
      stamp(src, { mode: 0o777 });
      stamp(remoteFile, { mode: 0o644, mtime: OLD });
      assert.equal((await cli("push", src, `${s.remote}:vm.img`)).blocksSent, 0);
      assert.deepEqual([meta(remoteFile).mode, meta(remoteFile).mtime], ["700", MTIME], "existing file, identical: 0777 gives 0700");

      // Pull: the client writes, under its own umask 022; the listener's 0777 is no order.
      const served = path.join(s.root, "srv.img");
      const local = path.join(s.dir, "pulled.img");
      writeImage(served, 5);
      stamp(served, { mode: 0o777 });
      await cli("pull", `${s.remote}:srv.img`, local);
      assert.deepEqual([meta(local).mode, meta(local).mtime], ["755", MTIME], "pull new");
      stamp(local, { mode: 0o600, mtime: OLD });
      const p = await cli("pull", `${s.remote}:srv.img`, local);
      assert.deepEqual([p.blocksSent, p.metadataChanged], [0, ["mode", "mtime"]]);
      assert.deepEqual([meta(local).mode, meta(local).mtime], ["755", MTIME], "pull, existing");

      // `ssync sync` under umask 077: the same rule, and its report knows it (one process writes).
      const copy = path.join(s.dir, "copy.img");
      const sync = async () => json(await runCli(["sync", "--json", src, copy], { config: s.client, umask: 0o077 }));
      stamp(src, { mode: 0o644 });
      await sync();
      assert.equal(meta(copy).mode, "600", "sync new");
      assert.deepEqual((await sync()).metadataChanged, [], "0644 under umask 077 is 0600: nothing to change");
    });
  });

  test("an exported regular file keeps its mode and mtime after a push with metadata; the summary says so", T, async () => {
    await withTempDir(async (dir) => {
      const pair = await makeCliPair(dir, { keygen: false });
      const exported = path.join(dir, "libvirt-vm.img"); // outside the root: the admin named it
      const src = path.join(dir, "src.img");
      writeImage(exported, 1);
      stamp(exported, { mode: 0o600, mtime: OLD });
      writeImage(src, 1);
      stamp(src, { mode: 0o644 });
      const listener = await startCliListener(["--root", pair.root, "--export", `vm=${exported}`], { config: pair.server });
      try {
        const push = async () => json(await runCli(["push", "--json", "--accept-new", src, `127.0.0.1:${listener.port}:vm`], { config: pair.client }));
        // Identical data: only metadata would change, and none does.
        let r = await push();
        assert.equal(r.blocksSent, 0);
        assert.deepEqual([r.metadataApplied, r.metadataChanged], [[], []]);
        assert.ok((r.warnings as string[]).some((w) => /mode and mtime not applied: .*an export keeps/.test(w)), String(r.warnings));
        assert.deepEqual([meta(exported).mode, meta(exported).mtime], ["600", OLD], "identical push");

        // Changed data: the mode stays, the mtime is the write's, not the source's.
        writeImage(src, 2);
        stamp(src, { mode: 0o644 });
        r = await push();
        assert.ok((r.blocksSent as number) > 0);
        assert.equal(meta(exported).mode, "600", "updated export");
        assert.notEqual(meta(exported).mtime, MTIME);
        assert.notEqual(meta(exported).mtime, OLD);
      } finally {
        await listener.stop();
      }
    });
  });
});
