/**
 * Fan-out (spec §5.11): `ssync push SRC A B C` with three real listeners on 127.0.0.1. The
 * source is read once (its read counter equals its data once, not three times); each
 * destination gets only its own differing blocks and ends identical and sparse; a listener
 * killed mid-way fails only its own destination; --verify checks every one; bad command lines
 * are refused before anything is dialled.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { makeCliPair } from "./helpers/cli-setup.ts";
import { type CliListener, finished, spawnCli, startCliListener, waitFor } from "./helpers/network.ts";
import { allocatedBytesOf, fileHash, makeSparseFile, withTempDir } from "./helpers/sparse.ts";

const MiB = 1024 ** 2;
const BLOCK = 65536;

type Summary = Record<string, unknown> & { destinations: Record<string, unknown>[] };

/** Three listeners, each with its own host key and root, all authorizing the client's one key. */
async function withListeners(dir: string, body: (o: { client: string; roots: string[]; remotes: string[]; listeners: CliListener[] }) => Promise<void>): Promise<void> {
  const pair = await makeCliPair(dir, { keygen: false });
  const authorized = path.join(pair.server, "ssync", "authorized_keys");
  const roots = [pair.root];
  const configs = [pair.server];
  for (const n of [2, 3]) {
    const config = path.join(dir, `server-config-${n}`);
    fs.mkdirSync(path.join(config, "ssync"), { recursive: true });
    fs.copyFileSync(authorized, path.join(config, "ssync", "authorized_keys"));
    fs.chmodSync(path.join(config, "ssync", "authorized_keys"), 0o600);
    const root = path.join(dir, `root-${n}`);
    fs.mkdirSync(root);
    roots.push(root);
    configs.push(config);
  }
  const listeners: CliListener[] = [];
  try {
    for (let i = 0; i < 3; i++) listeners.push(await startCliListener(["--root", roots[i]], { config: configs[i] }));
    await body({ client: pair.client, roots, remotes: listeners.map((l) => `127.0.0.1:${l.port}`), listeners });
  } finally {
    await Promise.all(listeners.map((l) => l.stop()));
  }
}

async function push(args: string[], client: string, timeoutMs = 90_000): Promise<{ code: number | null; stderr: string; stdout: string; summary: Summary | undefined }> {
  const r = await finished(spawnCli(["push", ...args], { config: client }), timeoutMs);
  const last = r.stdout.trim().split("\n").pop();
  let summary: Summary | undefined;
  try {
    summary = last ? JSON.parse(last) : undefined;
  } catch {
    summary = undefined;
  }
  return { code: r.code, stderr: r.stderr, stdout: r.stdout, summary };
}

function writeBlock(file: string, index: number, fill: number): void {
  const fd = fs.openSync(file, "r+");
  try {
    fs.writeSync(fd, new Uint8Array(BLOCK).fill(fill), 0, BLOCK, index * BLOCK);
  } finally {
    fs.closeSync(fd);
  }
}

describe("fan-out push", () => {
  test("one read of the source brings three different destinations up to date, each with its own blocks", { timeout: 180_000 }, async () => {
    await withTempDir(async (dir) => {
      await withListeners(dir, async ({ client, roots, remotes }) => {
        const src = path.join(dir, "vm.img");
        const dataBytes = 12 * MiB;
        makeSparseFile(src, {
          size: 256 * MiB,
          chunks: [{ offset: 0, length: 4 * MiB, fill: "random" }, { offset: 64 * MiB, length: 4 * MiB }, { offset: 200 * MiB, length: 4 * MiB, fill: "random" }],
        });
        assert.equal(allocatedBytesOf(src), dataBytes);
        // B holds the source already; C an older copy (three blocks differ); A nothing.
        fs.copyFileSync(src, path.join(roots[1], "vm.img"));
        const older = path.join(roots[2], "vm.img");
        fs.copyFileSync(src, older);
        for (const b of [3, 1025, 3201]) writeBlock(older, b, 0x5a);
        // Raw DATA (--compress never): every destination's payloads are views of one read buffer.
        let r = await push(["--accept-new", "--json", "--no-refine", "--compress", "never", src, ...remotes.map((x) => `${x}:vm.img`)], client);
        assert.equal(r.code, 0, r.stderr);
        const s = r.summary!;
        assert.equal(s.ok, true);
        assert.equal(s.fanOut, true);
        assert.equal(s.sourceBytesRead, dataBytes, "the source's data read once, not once per destination");
        const [a, b, c] = s.destinations;
        assert.equal(a.blocksSent, dataBytes / BLOCK, "A: every data block");
        assert.equal(b.blocksSent, 0, "B: nothing differed");
        assert.equal(b.dataBytesSent, 0);
        assert.equal(c.blocksSent, 3, "C: only its three blocks");
        for (const root of roots) {
          const dst = path.join(root, "vm.img");
          assert.equal(fileHash(dst), fileHash(src), dst);
          assert.ok(allocatedBytesOf(dst) <= dataBytes + BLOCK, `${dst} stays sparse: ${allocatedBytesOf(dst)} bytes allocated`);
        }

        // Human output: each destination, then the fan-out's line; --verify re-reads them all.
        writeBlock(src, 10, 0x33);
        r = await push(["--verify", src, ...remotes.map((x) => `${x}:vm.img`)], client);
        assert.equal(r.code, 0, r.stderr);
        // Two passes (the sync, then --verify's comparison), each reading the data once.
        assert.match(r.stdout, /3 of 3 destinations identical; source read once: 24\.0 MiB/);
        assert.equal((r.stdout.match(/now identical .*verified/g) ?? []).length, 3, r.stdout);
        for (const root of roots) assert.equal(fileHash(path.join(root, "vm.img")), fileHash(src));
      });
    });
  });

  test("a listener killed mid-way fails only its own destination", { timeout: 180_000 }, async () => {
    await withTempDir(async (dir) => {
      await withListeners(dir, async ({ client, roots, remotes, listeners }) => {
        const src = path.join(dir, "big.img");
        makeSparseFile(src, { size: 64 * MiB, chunks: [{ offset: 0, length: 48 * MiB, fill: "random" }] });
        // Slow enough (about 6 s a destination) to kill one in the middle.
        const child = spawnCli(["push", "--accept-new", "--json", "--bwlimit", "8M", "--compress", "never", src, ...remotes.map((x) => `${x}:big.img`)], { config: client });
        const running = finished(child, 120_000);
        const partial = () => fs.readdirSync(roots[1]).length > 0;
        await waitFor(partial, { timeoutMs: 30_000, what: "the second destination to start" });
        await new Promise((r) => setTimeout(r, 1000));
        listeners[1].child.kill("SIGKILL");
        const r = await running;
        const s = JSON.parse(r.stdout.trim().split("\n").pop()!) as Summary;
        assert.equal(r.code, 4, `exit 4: the failed destination was interrupted (a rerun completes it); ${r.stderr}`);
        assert.equal(s.ok, false);
        const [a, b, c] = s.destinations;
        assert.equal(a.ok, true, JSON.stringify(a));
        assert.equal(c.ok, true, JSON.stringify(c) + listeners.map((l) => `${l.port}: ${l.stderr()}`).join("\n"));
        assert.equal(b.ok, false);
        assert.match(String((b.error as { message: string }).message), /connection|closed|lost/i);
        assert.match(r.stderr, /1 of 3 destinations could not be synced/);
        assert.equal(s.sourceBytesRead, 48 * MiB);
        assert.equal(fileHash(path.join(roots[0], "big.img")), fileHash(src));
        assert.equal(fileHash(path.join(roots[2], "big.img")), fileHash(src));
        assert.ok(!fs.existsSync(path.join(roots[1], "big.img")), "the killed listener committed nothing");
      });
    });
  });

  test("a destination that cannot be dialled fails alone; the others do not wait for it", { timeout: 120_000 }, async () => {
    await withTempDir(async (dir) => {
      await withListeners(dir, async ({ client, roots, remotes }) => {
        const src = path.join(dir, "vm.img");
        makeSparseFile(src, { size: 32 * MiB, chunks: [{ offset: 0, length: 2 * MiB, fill: "random" }] });
        // Port 9 (discard): nothing listens on it, the dial is refused at once.
        const r = await push(["--accept-new", "--json", src, `${remotes[0]}:vm.img`, "127.0.0.1:9:vm.img", `${remotes[2]}:vm.img`], client, 60_000);
        assert.equal(r.code, 1, r.stderr);
        const [a, b, c] = r.summary!.destinations;
        assert.equal(a.ok, true);
        assert.equal(b.ok, false);
        assert.match(String((b.error as { message: string }).message), /127\.0\.0\.1:9/);
        assert.equal(c.ok, true);
        assert.equal(fileHash(path.join(roots[0], "vm.img")), fileHash(src));
        assert.equal(fileHash(path.join(roots[2], "vm.img")), fileHash(src));
      });
    });
  });

  test("bad command lines are refused before anything is dialled", { timeout: 60_000 }, async () => {
    await withTempDir(async (dir) => {
      const pair = await makeCliPair(dir, { keygen: false });
      const src = path.join(dir, "vm.img");
      makeSparseFile(src, { size: MiB, chunks: [{ offset: 0, length: 4096 }] });
      // Port 9 (discard): nothing listens there; a dial would fail with another message.
      let r = await push(["--pair", "ABCD-EFGH", src, "127.0.0.1:9:a", "127.0.0.1:9:b"], pair.client);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /--pair with several destinations/);
      r = await push([src, "127.0.0.1:9:a", "127.0.0.1:9:a"], pair.client);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /127\.0\.0\.1:9:a is named twice/);
      r = await push([`${dir}/`, "127.0.0.1:9:a/", "127.0.0.1:9:b/"], pair.client);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /Cannot push the folder .* to several destinations/);
      r = await push(["--delete", src, "127.0.0.1:9:a", "127.0.0.1:9:b"], pair.client);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /--delete is for a folder push/);
    });
  });
});
