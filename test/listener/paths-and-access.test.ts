/**
 * The listener in-process, over real TCP on 127.0.0.1: path confinement, read-only
 * listener and keys, path prefixes, unauthorized keys, concurrent writers, garbage on the
 * port, a connection lost mid-session.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import { spawnSync } from "node:child_process";
import { connect } from "node:net";
import path from "node:path";
import { WorkerPool } from "../../src/engine/worker-pool.ts";
import { clientPathComponents } from "../../src/listener/open-for-client.ts";
import type { ListenerOptions } from "../../src/listener/listener.ts";
import { addressKey, addressPrefixes } from "../../src/listener/address-prefixes.ts";
import { AuthenticationError, IncompleteSyncError, RemoteError } from "../../src/util/errors.ts";
import { generateKeyPair } from "../../src/noise/x25519.ts";
import { allocatedBytesOf, fileHash, makeSparseFile, withTempDir } from "../helpers/sparse.ts";
import { authorize, clientSync, holdAtSend, startListener, type TestServer, waitFor } from "../helpers/network.ts";

const T = { timeout: 60_000 };
let pool: WorkerPool;
before(() => {
  pool = new WorkerPool();
});
after(async () => {
  await pool[Symbol.asyncDispose]();
});

async function withServer(
  options: Partial<ListenerOptions> & { keyOptions?: string },
  body: (ctx: { dir: string; server: TestServer; key: ReturnType<typeof generateKeyPair>; knownHosts: string }) => Promise<void>,
): Promise<void> {
  const { keyOptions, ...listenerOptions } = options;
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool, ...listenerOptions });
    const key = generateKeyPair();
    authorize(server.authorizedKeys, key, { options: keyOptions });
    try {
      await body({ dir, server, key, knownHosts: path.join(dir, "known_hosts") });
    } finally {
      await server.listener.close();
    }
  });
}

function ls(dir: string): string[] {
  return fs.readdirSync(dir).sort();
}

describe("client paths", () => {
  test("refused before any file access: .., absolute, NUL, empty, . and empty components", T, () => {
    for (const bad of ["../x", "a/../../x", "..", "/etc/passwd", "a\0b", "", "./a", "a//b", "a/"]) {
      assert.throws(() => clientPathComponents(bad), (e: Error & { code?: string }) => ["EACCES", "EINVAL"].includes(e.code!), bad);
    }
    assert.deepEqual(clientPathComponents("vm/disk.img"), ["vm", "disk.img"]);
  });

  test("../x, an absolute path and symlinks out of the root are refused; nothing is written outside", T, async () => {
    await withServer({}, async ({ dir, server, key, knownHosts }) => {
      const src = path.join(dir, "src.img");
      makeSparseFile(src, { size: 1 << 20, chunks: [{ offset: 0, length: 65536 }] });
      const outside = path.join(dir, "outside");
      fs.mkdirSync(outside);
      fs.writeFileSync(path.join(outside, "victim.img"), "keep");
      fs.symlinkSync(path.join(outside, "victim.img"), path.join(server.root, "link.img"));
      fs.symlinkSync(outside, path.join(server.root, "linkdir"));
      fs.symlinkSync(path.join(outside, "new.img"), path.join(server.root, "dangling.img"));
      const before = ls(dir);
      const cases: [string, RegExp][] = [
        ["../escape.img", /"\.\." components are refused/],
        [path.join(outside, "abs.img"), /absolute paths are refused/],
        ["link.img", /symbolic link/],
        ["linkdir/victim.img", /symbolic link/],
        ["linkdir/new.img", /symbolic link/],
        ["dangling.img", /symbolic link/],
      ];
      for (const [name, why] of cases) {
        for (const mode of ["push", "pull"] as const) {
          const local = mode === "push" ? src : path.join(dir, `pulled-${mode}.img`);
          await assert.rejects(
            clientSync(server, { mode, local, name, key, pool, knownHosts }),
            (e: Error) => e instanceof RemoteError && why.test(e.message),
            `${mode} ${name}`,
          );
        }
      }
      assert.equal(fs.readFileSync(path.join(outside, "victim.img"), "utf8"), "keep");
      assert.deepEqual(ls(outside), ["victim.img"]);
      const mine = (f: string) => !f.startsWith("pulled-") && f !== "known_hosts";
      assert.deepEqual(ls(dir).filter(mine), before.filter(mine));
      assert.deepEqual(ls(server.root), ["dangling.img", "link.img", "linkdir"]);
    });
  });

  test("a file hard-linked from outside the root is not written", T, async () => {
    await withServer({}, async ({ dir, server, key, knownHosts }) => {
      const src = path.join(dir, "src.img");
      makeSparseFile(src, { size: 1 << 20, chunks: [{ offset: 0, length: 65536, fill: "random" }] });
      const victim = path.join(dir, "victim.img");
      fs.writeFileSync(victim, "keep");
      fs.linkSync(victim, path.join(server.root, "linked.img"));
      await assert.rejects(
        clientSync(server, { mode: "push", local: src, name: "linked.img", key, pool, knownHosts }),
        (e: Error) => e instanceof RemoteError && e.code === "EACCES" && /2 hard links/.test(e.message),
      );
      assert.equal(fs.readFileSync(victim, "utf8"), "keep");
      // Reading it is allowed (a pull), as is a dry run.
      await clientSync(server, { mode: "push", local: src, name: "linked.img", key, pool, knownHosts, dryRun: true });
      const pulled = path.join(dir, "pulled.img");
      await clientSync(server, { mode: "pull", local: pulled, name: "linked.img", key, pool, knownHosts });
      assert.equal(fs.readFileSync(pulled, "utf8"), "keep");
    });
  });

  test("a missing parent folder is not created; a file in an existing subfolder is", T, async () => {
    await withServer({}, async ({ dir, server, key, knownHosts }) => {
      const src = path.join(dir, "src.img");
      makeSparseFile(src, { size: 1 << 20, chunks: [{ offset: 4096, length: 65536 }] });
      await assert.rejects(clientSync(server, { mode: "push", local: src, name: "no/such/x.img", key, pool, knownHosts }), /does not exist/);
      assert.deepEqual(ls(server.root), []);
      fs.mkdirSync(path.join(server.root, "vm"));
      await clientSync(server, { mode: "push", local: src, name: "vm/x.img", key, pool, knownHosts });
      assert.equal(fileHash(path.join(server.root, "vm/x.img")), fileHash(src));
    });
  });

  test("an export name opens its path, matched before path rules", T, async () => {
    await withTempDir(async (other) => {
      const target = path.join(other, "exported.img");
      makeSparseFile(target, { size: 2 << 20, chunks: [{ offset: 1 << 20, length: 65536 }] });
      await withServer({ exports: new Map([["disk0", target]]) }, async ({ dir, key, server, knownHosts }) => {
        const local = path.join(dir, "copy.img");
        await clientSync(server, { mode: "pull", local, name: "disk0", key, pool, knownHosts });
        assert.equal(fileHash(local), fileHash(target));
      });
    });
  });
});

describe("access control", () => {
  test("a key not in authorized_keys is refused and nothing is written", T, async () => {
    await withServer({}, async ({ dir, server, knownHosts }) => {
      const src = path.join(dir, "src.img");
      makeSparseFile(src, { size: 1 << 20, chunks: [{ offset: 0, length: 65536 }] });
      const stranger = generateKeyPair();
      await assert.rejects(
        clientSync(server, { mode: "push", local: src, name: "x.img", key: stranger, pool, knownHosts }),
        (e: Error) => e instanceof AuthenticationError && /does not authorize our key/.test(e.message),
      );
      assert.deepEqual(ls(server.root), []);
      await waitFor(() => /refused: the client's key SHA256:\S+ is not authorized/.test(server.logs.join("\n")), {
        timeoutMs: 5000,
        what: "the refusal in the log",
      });
    });
  });

  for (const [what, opts] of [["a read-only listener", { readOnly: true }], ["a read-only key", { keyOptions: "read-only" }]] as const) {
    test(`${what}: every write refused, the file unchanged; reads allowed`, T, async () => {
      await withServer(opts, async ({ dir, server, key, knownHosts }) => {
        const target = path.join(server.root, "t.img");
        makeSparseFile(target, { size: 1 << 20, chunks: [{ offset: 0, length: 65536, seed: 1 }] });
        const src = path.join(dir, "src.img");
        makeSparseFile(src, { size: 2 << 20, chunks: [{ offset: 0, length: 131072, seed: 2 }] });
        const hash = fileHash(target);
        const stat = fs.statSync(target);
        for (const name of ["t.img", "new.img"]) {
          await assert.rejects(
            clientSync(server, { mode: "push", local: src, name, key, pool, knownHosts }),
            (e: Error) => e instanceof RemoteError && e.code === "EROFS" && /read-only/.test(e.message),
          );
        }
        assert.equal(fileHash(target), hash);
        assert.equal(fs.statSync(target).mtimeMs, stat.mtimeMs);
        assert.deepEqual(ls(server.root), ["t.img"]);
        const copy = path.join(dir, "copy.img");
        await clientSync(server, { mode: "pull", local: copy, name: "t.img", key, pool, knownHosts });
        assert.equal(fileHash(copy), hash);
      });
    });
  }

  test("a key restricted to a path prefix opens nothing else", T, async () => {
    await withServer({ keyOptions: "path=vm" }, async ({ dir, server, key, knownHosts }) => {
      fs.mkdirSync(path.join(server.root, "vm"));
      fs.mkdirSync(path.join(server.root, "vmx"));
      const src = path.join(dir, "src.img");
      makeSparseFile(src, { size: 1 << 20, chunks: [{ offset: 0, length: 65536 }] });
      await clientSync(server, { mode: "push", local: src, name: "vm/a.img", key, pool, knownHosts });
      for (const name of ["vmx/a.img", "a.img"]) {
        await assert.rejects(
          clientSync(server, { mode: "push", local: src, name, key, pool, knownHosts }),
          (e: Error) => e instanceof RemoteError && e.code === "EACCES" && /only open paths under vm/.test(e.message),
        );
      }
      assert.deepEqual(ls(path.join(server.root, "vmx")), []);
    });
  });
});

describe("robustness", () => {
  test("random bytes (1 B, 40 B, 100 KB) to the port: the listener stays up and serves the next client", T, async () => {
    await withServer({}, async ({ dir, server, key, knownHosts }) => {
      for (const n of [1, 40, 100_000]) {
        const socket = connect(server.listener.port, "127.0.0.1");
        socket.on("error", () => {});
        await new Promise<void>((r) => socket.once("connect", () => r()));
        socket.write(randomBytes(n));
        socket.end();
        await new Promise<void>((r) => socket.once("close", () => r()));
      }
      // A connection that sends a valid preamble and then stalls is cut by the handshake timeout;
      // meanwhile others are served.
      const src = path.join(dir, "src.img");
      makeSparseFile(src, { size: 4 << 20, chunks: [{ offset: 1 << 20, length: 1 << 20 }] });
      await clientSync(server, { mode: "push", local: src, name: "after.img", key, pool, knownHosts });
      assert.equal(fileHash(path.join(server.root, "after.img")), fileHash(src));
      await waitFor(() => server.listener.load.handshakes === 0 && server.listener.load.sessions === 0, { timeoutMs: 5000, what: "idle listener" });
      assert.equal(server.logs.filter((l) => / refused: /.test(l)).length, 3);
    });
  });

  test("a stalled handshake is cut by the first-message deadline; the handshake cap evicts the oldest", T, async () => {
    await withTempDir(async (dir) => {
      const server = await startListener(dir, { pool, handshakeTimeoutMs: 5000, firstMessageTimeoutMs: 1500, maxHandshakes: 2 });
      try {
        const sockets = [0, 1, 2].map(() => {
          const s = connect(server.listener.port, "127.0.0.1");
          s.on("error", () => {});
          return { s, closed: new Promise<number>((r) => s.once("close", () => r(Date.now()))) };
        });
        const start = Date.now();
        const times = await Promise.all(sockets.map((x) => x.closed));
        // The oldest is evicted at once (cap 2), the other two are cut after ~1500 ms.
        const sorted = times.map((t) => t - start).sort((a, b) => a - b);
        assert.ok(sorted[0] < 1000, `first closed after ${sorted[0]} ms`);
        assert.ok(sorted[1] >= 1400 && sorted[2] < 10_000, `timeouts after ${sorted.join(", ")} ms`);
        assert.match(server.logs.join("\n"), /evicted: a newer connection reached the cap of 2 handshakes/);
        assert.match(server.logs.join("\n"), /the first handshake message did not arrive within 1500 ms/);
      } finally {
        await server.listener.close();
      }
    });
  });

  test("one address cannot hold every handshake slot: its oldest are evicted, others are served", T, async () => {
    await withServer({ handshakeTimeoutMs: 10_000, maxHandshakesPerAddress: 2 }, async ({ dir, server, key, knownHosts }) => {
      const stalled = [0, 1, 2].map(() => {
        const s = connect({ port: server.listener.port, host: "127.0.0.1", localAddress: "127.0.0.2" });
        s.on("error", () => {});
        return s;
      });
      try {
        await waitFor(() => server.logs.some((l) => /evicted: a newer connection from 127\.0\.0\.2 reached the cap of 2/.test(l)), {
          timeoutMs: 5000,
          what: "the first connection from 127.0.0.2 evicted by the third",
        });
        assert.equal(server.listener.load.handshakes, 2);
        const src = path.join(dir, "src.img");
        makeSparseFile(src, { size: 1 << 20, chunks: [{ offset: 0, length: 65536 }] });
        await clientSync(server, { mode: "push", local: src, name: "served.img", key, pool, knownHosts });
        assert.equal(fileHash(path.join(server.root, "served.img")), fileHash(src));
      } finally {
        for (const s of stalled) s.destroy();
      }
    });
    assert.equal(addressKey("::ffff:10.1.2.3"), "10.1.2.3");
    assert.equal(addressKey("2001:db8:0:12:aa::1"), "2001:db8:0:12::/64");
    assert.equal(addressKey("2001:0db8:0000:0012:ffff::"), "2001:db8:0:12::/64");
    assert.equal(addressKey("fe80::1%eth0"), "fe80:0:0:0::/64");
    assert.deepEqual(addressPrefixes("2001:db8:7:12:aa::1"), ["2001:db8:7:12::/64", "2001:db8:7::/48"]);
    assert.deepEqual(addressPrefixes("64:ff9b::10.1.2.3"), ["64:ff9b:0:0::/64", "64:ff9b:0::/48"]);
    assert.deepEqual(addressPrefixes("::ffff:10.1.2.3"), ["10.1.2.3"]);
  });

  test("an idle session is closed after the idle timeout", T, async () => {
    await withTempDir(async (dir) => {
      const server = await startListener(dir, { pool, idleTimeoutMs: 300 });
      const key = generateKeyPair();
      authorize(server.authorizedKeys, key);
      try {
        const { dial } = await import("../../src/net/dial.ts");
        const conn = await dial({ host: "127.0.0.1", port: server.listener.port, staticKey: key, knownHostsFile: path.join(dir, "kh"), acceptNew: true });
        const started = Date.now();
        await assert.rejects(conn.channel.receive().then((r) => {
          if (r === null) throw new Error("ended");
        }));
        assert.ok(Date.now() - started < 5000);
        await waitFor(() => server.listener.load.sessions === 0, { timeoutMs: 5000, what: "session end" });
        assert.match(server.logs.join("\n"), /idle timeout/);
      } finally {
        await server.listener.close();
      }
    });
  });

  test("a full disk at the listener: ENOSPC naming the client's path, not the server's; the listener goes on", T, async (t) => {
    await withTempDir(async (dir) => {
      const root = path.join(dir, "small");
      fs.mkdirSync(root);
      if (spawnSync("mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", root]).status !== 0) {
        return t.skip("mounting a 2 MiB tmpfs needs root");
      }
      try {
        const server = await startListener(dir, { pool, root });
        const key = generateKeyPair();
        authorize(server.authorizedKeys, key);
        const knownHosts = path.join(dir, "known_hosts");
        try {
          const big = path.join(dir, "big.img");
          makeSparseFile(big, { size: 8 << 20, chunks: [{ offset: 0, length: 8 << 20, fill: "random" }] });
          await assert.rejects(
            clientSync(server, { mode: "push", local: big, name: "big.img", key, pool, knownHosts }),
            (e: Error) => e instanceof RemoteError && e.code === "ENOSPC" && /big\.img/.test(e.message) && !/\/proc\/|small/.test(e.message),
          );
          // The listener's log names the real cause, not the client hanging up on it.
          await waitFor(() => server.logs.some((l) => /push "big\.img".*: failed: ENOSPC /.test(l)), {
            timeoutMs: 5000,
            what: `ENOSPC in the listener's log:\n${server.logs.join("\n")}`,
          });
          // Nothing under the name; the partial file kept to resume from is what the admin frees.
          assert.ok(!fs.existsSync(path.join(root, "big.img")));
          fs.rmSync(path.join(root, ".big.img.ssync-partial"));
          const src = path.join(dir, "src.img");
          makeSparseFile(src, { size: 1 << 20, chunks: [{ offset: 0, length: 65536, fill: "random" }] });
          await clientSync(server, { mode: "push", local: src, name: "after.img", key, pool, knownHosts });
          assert.equal(fileHash(path.join(root, "after.img")), fileHash(src));
        } finally {
          await server.listener.close();
        }
      } finally {
        spawnSync("umount", [root]);
      }
    });
  });

  test("two pushes to one file at once: one succeeds, the other is told busy; the file is the winner's", T, async () => {
    await withServer({}, async ({ dir, server, key, knownHosts }) => {
      const a = path.join(dir, "a.img");
      const b = path.join(dir, "b.img");
      makeSparseFile(a, { size: 8 << 20, chunks: [{ offset: 0, length: 8 << 20, fill: "random" }] });
      makeSparseFile(b, { size: 8 << 20, chunks: [{ offset: 0, length: 8 << 20, fill: "random" }] });
      // The first push is held right after OPEN_OK (its file open and locked at the listener)
      // while the second one runs: the interleaving is fixed, not left to timing.
      const hold = holdAtSend(2);
      const first = clientSync(server, { mode: "push", local: a, name: "shared.img", key, pool, knownHosts, wrap: hold.wrap });
      first.catch(() => {});
      await hold.reached;
      const second = await clientSync(server, { mode: "push", local: b, name: "shared.img", key, pool, knownHosts })
        .then(() => new Error("the second push succeeded"), (e: Error) => e);
      hold.release();
      await first;
      assert.ok(second instanceof RemoteError && second.code === "EBUSY", `${second}\nlistener log:\n${server.logs.join("\n")}`);
      assert.match(second.message, /Cannot write shared\.img: it is busy/);
      assert.equal(fileHash(path.join(server.root, "shared.img")), fileHash(a));
    });
  });

  test("the connection lost mid-push is an IncompleteSyncError; a rerun completes the file", T, async () => {
    await withTempDir(async (dir) => {
      let server = await startListener(dir, { pool });
      const key = generateKeyPair();
      authorize(server.authorizedKeys, key);
      const knownHosts = path.join(dir, "known_hosts");
      const src = path.join(dir, "src.img");
      makeSparseFile(src, { size: 64 << 20, chunks: [{ offset: 0, length: 32 << 20, fill: "random" }] });
      const dst = path.join(server.root, "dst.img");
      // Held at its 5th DATA message: some data is at the destination, the rest is not.
      const hold = holdAtSend(5, { type: "DATA" });
      const push = clientSync(server, { mode: "push", local: src, name: "dst.img", key, pool, knownHosts, wrap: hold.wrap });
      push.catch(() => {});
      await hold.reached;
      const partial = path.join(server.root, ".dst.img.ssync-partial");
      await waitFor(() => fs.existsSync(partial) && allocatedBytesOf(partial) > 0, { timeoutMs: 30_000, what: "data in the partial file" });
      const port = server.listener.port;
      await server.listener.close();
      hold.release();
      await assert.rejects(push, (e: Error) => e instanceof IncompleteSyncError, "the push must fail as incomplete");
      assert.ok(!fs.existsSync(dst), "a new file appears under its name only at commit");
      server = await startListener(dir, { pool, port, hostKey: server.hostKey });
      try {
        await clientSync(server, { mode: "push", local: src, name: "dst.img", key, pool, knownHosts });
        assert.equal(fileHash(dst), fileHash(src));
        assert.ok(allocatedBytesOf(dst) <= allocatedBytesOf(src) + 65536);
      } finally {
        await server.listener.close();
      }
    });
  });
});
