/**
 * The client (the real CLI, scripts/ssync) against listeners that stall, lie, fill its disk
 * or die in the handshake (issue 7, "Why" items 5 and 8): it always ends, non-zero, saying
 * why, and leaves no file it created behind.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { MAX_U53 } from "../protocol/constants.ts";
import type { Message } from "../protocol/messages.ts";
import { WorkerPool } from "../src/engine/worker-pool.ts";
import { drain, type FakeListener, receiveMessage, sendMessage, startFakeListener, tcpTimer } from "./helpers/fake-listener.ts";
import { authorize, makeKey, runCli, startListener, waitFor } from "./helpers/network.ts";
import { fileHash, makeSparseFile, withTempDir } from "./helpers/sparse.ts";

const MiB = 1 << 20;
const IDLE_S = 2;

/** A client config folder (XDG_CONFIG_HOME) with its default key. */
async function clientConfig(dir: string): Promise<{ config: string; key: Awaited<ReturnType<typeof makeKey>> }> {
  const config = path.join(dir, "client-config");
  fs.mkdirSync(path.join(config, "ssync"), { recursive: true });
  return { config, key: await makeKey(path.join(config, "ssync", "id_ssync")) };
}

async function withFake<T>(options: Parameters<typeof startFakeListener>[0], body: (fake: FakeListener) => Promise<T>): Promise<T> {
  const fake = await startFakeListener(options);
  try {
    return await body(fake);
  } finally {
    await fake.close();
  }
}

describe("the client against a hostile or broken listener", () => {
  test("a listener gone silent (after OPEN_OK, or before a pull's RANGE_DONE): the client ends within the idle timeout + 5 s; its socket has TCP keepalive", { timeout: 60_000 }, async () => {
    await withTempDir(async (dir) => {
      const { config } = await clientConfig(dir);
      const src = path.join(dir, "src.img");
      makeSparseFile(src, { size: 4 * MiB, chunks: [{ offset: 0, length: 2 * MiB, seed: 3 }] });
      /** What each silent listener does after OPEN_OK before it stops answering. */
      const cases: { name: string; mode: "push" | "pull"; before: (conn: Parameters<typeof drain>[0], m: Message) => Promise<boolean> }[] = [
        { name: "pull, silent after OPEN_OK", mode: "pull", before: () => Promise.resolve(false) },
        {
          name: "pull, DATA but never RANGE_DONE",
          mode: "pull",
          before: async (conn, m) => {
            if (m.type !== "READ_DIFF" || m.offset !== 0) return false;
            await sendMessage(conn, { type: "DATA", cookie: m.cookie, offset: 0, length: 65536, payload: new Uint8Array(65536).fill(7), zstd: false });
            return true;
          },
        },
        { name: "push, silent after OPEN_OK", mode: "push", before: () => Promise.resolve(false) },
      ];
      await Promise.all(cases.map(async (c, i) => {
        let silentSince = 0;
        let keepalive: string | undefined;
        await withFake({
          serve: async (conn, socket) => {
            const open = await receiveMessage(conn);
            assert.equal(open?.type, "OPEN");
            // CAP_METADATA answers OPEN_METADATA (granting nothing): a listener of this version.
            const metadata = open?.type === "OPEN" && open.metadata ? { metadata: {} } : {};
            await sendMessage(conn, { type: "OPEN_OK", cookie: open!.cookie, size: 4 * MiB, zstd: false, kind: "file", ...metadata });
            silentSince = Date.now();
            for (;;) {
              const m = await receiveMessage(conn);
              if (m === null) return;
              if (await c.before(conn, m)) {
                silentSince = Date.now();
                break;
              }
              if (c.mode === "push" || m.type === "READ_DIFF") break;
            }
            // The client's own socket (its local port is our remote port), seen by the kernel.
            const drained = drain(conn);
            await new Promise((r) => setTimeout(r, 500));
            keepalive = tcpTimer(socket.remotePort!, socket.localPort!);
            await drained;
          },
        }, async (fake) => {
          const local = path.join(dir, `local-${i}.img`);
          const remote = `127.0.0.1:${fake.port}`;
          const args = c.mode === "pull" ? ["pull", `${remote}:x.img`, local] : ["push", src, `${remote}:x.img`];
          const r = await runCli([args[0], "--idle-timeout", String(IDLE_S), "--host-key", fake.fingerprint, ...args.slice(1)], { config, timeoutMs: 30_000 });
          const waited = Date.now() - silentSince;
          assert.notEqual(r.code, 0, `${c.name}: ${r.stderr}`);
          assert.match(r.stderr, new RegExp(`the listener sent nothing for ${IDLE_S} s`), c.name);
          assert.ok(silentSince > 0 && waited < (IDLE_S + 5) * 1000, `${c.name}: ended ${waited} ms after the listener went silent`);
          assert.equal(keepalive, "keepalive", `${c.name}: the client's socket has SO_KEEPALIVE`);
          if (c.mode === "pull") assert.equal(fs.existsSync(local), false, `${c.name}: the file this pull created is removed`);
        });
      }));
    });
  });

  test("--idle-timeout takes whole seconds (1 … a day); anything else is a usage error", { timeout: 30_000 }, async () => {
    await withTempDir(async (dir) => {
      const { config } = await clientConfig(dir);
      for (const bad of ["0", "-1", "1.5", "soon", "86401"]) {
        const r = await runCli(["pull", `--idle-timeout=${bad}`, "127.0.0.1:1:x.img", path.join(dir, "x.img")], { config, timeoutMs: 20_000 });
        assert.equal(r.code, 2, `${bad}: ${r.stderr}`);
        assert.match(r.stderr, /Invalid --idle-timeout/);
      }
      assert.equal(fs.existsSync(path.join(dir, "x.img")), false);
    });
  });

  test("an OPEN_OK size beyond 2^50 is refused before the local file is created or resized", { timeout: 60_000 }, async () => {
    await withTempDir(async (dir) => {
      const { config } = await clientConfig(dir);
      const existing = path.join(dir, "existing.img");
      makeSparseFile(existing, { size: MiB, chunks: [{ offset: 0, length: 65536, seed: 5 }] });
      const before = fileHash(existing);
      for (const size of [MAX_U53, 2 ** 50 + 65536]) {
        const seen: string[] = [];
        await withFake({
          serve: async (conn) => {
            for (;;) {
              const m = await receiveMessage(conn);
              if (m === null) return;
              seen.push(m.type);
              if (m.type === "OPEN") {
                await sendMessage(conn, { type: "OPEN_OK", cookie: m.cookie, size, zstd: false, kind: "file", ...(m.metadata ? { metadata: {} } : {}) });
              }
            }
          },
        }, async (fake) => {
          const remote = `127.0.0.1:${fake.port}:huge.img`;
          const fresh = path.join(dir, "fresh.img");
          for (const local of [fresh, existing]) {
            seen.length = 0;
            const r = await runCli(["pull", "--host-key", fake.fingerprint, remote, local], { config, timeoutMs: 30_000 });
            assert.equal(r.code, 1, r.stderr);
            assert.match(r.stderr, new RegExp(`Cannot pull huge\\.img: the listener says it is ${size} bytes, more than .*\\(2\\^50\\)`));
            assert.deepEqual(seen, ["OPEN"], "nothing is asked after OPEN_OK");
          }
          assert.equal(fs.existsSync(fresh), false, "a missing file is not left created");
          assert.equal(fs.statSync(existing).size, MiB, "an existing file keeps its size");
          assert.equal(fileHash(existing), before, "and its bytes");
        });
      }
    });
  });

  test("a pull into a full filesystem (2 MiB tmpfs) ends at once naming ENOSPC; the file it created is removed, an existing one kept; the listener serves on", { timeout: 90_000 }, async (t) => {
    await withTempDir(async (dir) => {
      const mnt = path.join(dir, "small");
      fs.mkdirSync(mnt);
      const mount = spawnSync("mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt], { encoding: "utf8" });
      if (mount.status !== 0) {
        t.skip(`cannot mount a tmpfs here (${(mount.stderr || mount.error?.message || "").trim()}): needs root`);
        return;
      }
      const pool = new WorkerPool({ size: 2 });
      const server = await startListener(dir, { pool });
      try {
        const { config, key } = await clientConfig(dir);
        authorize(server.authorizedKeys, key);
        // More than the client's 32 MiB DATA window beyond what fits: failed writes that kept
        // their window bytes once left the receive loop waiting forever.
        makeSparseFile(path.join(server.root, "big.img"), { size: 72 * MiB, chunks: [{ offset: 0, length: 64 * MiB, fill: "random" }] });
        const remote = `127.0.0.1:${server.listener.port}:big.img`;
        const kept = path.join(mnt, "kept.img");
        makeSparseFile(kept, { size: 4 * MiB, chunks: [{ offset: 0, length: 65536, seed: 9 }] });

        for (const local of [path.join(mnt, "new.img"), kept]) {
          const r = await runCli(["pull", "--accept-new", remote, local], { config, timeoutMs: 30_000 });
          assert.equal(r.code, 1, r.stderr);
          assert.match(r.stderr, /no space left on device/i);
        }
        assert.equal(fs.existsSync(path.join(mnt, "new.img")), false, "the file this pull created is removed");
        assert.equal(fs.existsSync(kept), true, "a file that was there before is kept");

        await waitFor(() => server.listener.load.sessions === 0, { timeoutMs: 15_000, what: "the listener to end both sessions" });
        const ok = path.join(dir, "ok.img");
        const r = await runCli(["pull", remote, ok], { config, timeoutMs: 30_000 });
        assert.equal(r.code, 0, r.stderr);
        assert.equal(fileHash(ok), fileHash(path.join(server.root, "big.img")));
      } finally {
        await server.listener.close();
        await pool[Symbol.asyncDispose]();
        spawnSync("umount", ["-l", mnt]);
      }
    });
  });

  test("exit 5 only when the listener refuses our key; a listener that closes after handshake message 3 is exit 1", { timeout: 60_000 }, async () => {
    await withTempDir(async (dir) => {
      const { config } = await clientConfig(dir);
      const src = path.join(dir, "a.img");
      makeSparseFile(src, { size: MiB, chunks: [{ offset: 0, length: 65536 }] });

      // Dies between message 3 and its answer (killed, crashed): no refusal was said.
      await withFake({
        authorize: (socket) => {
          socket.destroy();
          throw new Error("the listener died");
        },
      }, async (fake) => {
        const r = await runCli(["push", "--host-key", fake.fingerprint, src, `127.0.0.1:${fake.port}:a.img`], { config, timeoutMs: 30_000 });
        assert.equal(r.code, 1, r.stderr);
        assert.match(r.stderr, new RegExp(`Cannot connect to 127\\.0\\.0\\.1:${fake.port}: the listener closed the connection during the handshake`));
        assert.doesNotMatch(r.stderr, /authorize/);
      });

      // A real listener that does not know our key says so: exit 5.
      const pool = new WorkerPool({ size: 1 });
      const server = await startListener(dir, { pool });
      try {
        const r = await runCli(["push", "--accept-new", src, `127.0.0.1:${server.listener.port}:a.img`], { config, timeoutMs: 30_000 });
        assert.equal(r.code, 5, r.stderr);
        assert.match(r.stderr, /the listener does not authorize our key SHA256:/);
        assert.deepEqual(fs.readdirSync(server.root), []);
        await waitFor(() => /is not authorized/.test(server.logs.join("\n")), { timeoutMs: 5000, what: "the listener's log line" });
      } finally {
        await server.listener.close();
        await pool[Symbol.asyncDispose]();
      }
    });
  });
});
