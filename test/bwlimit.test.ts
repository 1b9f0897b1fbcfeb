/**
 * --bwlimit RATE (issue 10, scope 5): bytes per second of wire data, a token bucket per
 * direction in the client's channel (net/rate-limited-channel.ts).
 *
 * 1. parseBwlimit: 1024-based K, M, G like --block-size; bare bytes; 0 is no limit; a floor.
 * 2. TokenBucket on a test clock: starts full at its burst, overdraws, waits out its debt,
 *    never saves more than its burst.
 * 3. RateLimitedChannel over the in-memory pair: sends pass in order at the rate, wait here
 *    (backlog ≥ 1, activity begun) and reject on close(reason); receives are taken from the
 *    inner channel no faster than the rate.
 * 4. End to end (scripts/ssync, a real listener on 127.0.0.1): a 200 MiB random first copy
 *    at 20M, push then pull, takes at least 9 s and stays under the limit on the wire; a
 *    record that waits 4 s for a 64K limit does not trip --idle-timeout 1, either way; a push
 *    under a limit compresses ("auto": the limit backs the queue up); `ssync sync` refuses
 *    --bwlimit (no wire); `ssync listen --bwlimit` limits all its sessions together.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { MIN_BWLIMIT, parseBwlimit } from "../src/cli/bwlimit.ts";
import { DEFAULT_MAX_UNSENT_BYTES } from "../src/net/noise-record-channel.ts";
import { RECORD_OVERHEAD, RateLimitedChannel } from "../src/net/rate-limited-channel.ts";
import { TokenBucket } from "../src/net/token-bucket.ts";
import { memoryPair } from "../src/session/memory-pair.ts";
import { UsageError } from "../src/util/errors.ts";
import { withCliSetup } from "./helpers/cli-setup.ts";
import { runCli } from "./helpers/network.ts";
import { fileHash } from "./helpers/sparse.ts";

const KiB = 1024;
const MiB = 1024 * 1024;

function summaryOf(stdout: string): Record<string, number | string | boolean> {
  return JSON.parse(stdout.trim().split("\n").pop()!);
}

/** `bytes` of `kind` data, written in 8 MiB pieces. */
function writeData(file: string, bytes: number, kind: "random" | "hex"): void {
  const fd = fs.openSync(file, "w");
  try {
    for (let at = 0; at < bytes; at += 8 * MiB) {
      const n = Math.min(8 * MiB, bytes - at);
      const piece = kind === "random" ? crypto.randomBytes(n) : Buffer.from(crypto.randomBytes(n / 2).toString("hex"));
      fs.writeSync(fd, piece, 0, n, at);
    }
  } finally {
    fs.closeSync(fd);
  }
}

describe("--bwlimit", () => {
  test("parseBwlimit: K, M, G are 1024-based (as --block-size), a bare number is bytes, 0 is none, 64K the floor", () => {
    assert.equal(parseBwlimit(undefined), undefined);
    assert.equal(parseBwlimit("0"), undefined);
    assert.equal(parseBwlimit(0), undefined);
    assert.equal(parseBwlimit("50M"), 50 * MiB);
    assert.equal(parseBwlimit("500K"), 500 * KiB);
    assert.equal(parseBwlimit("500k"), 500 * KiB);
    assert.equal(parseBwlimit("1G"), 1024 * MiB);
    assert.equal(parseBwlimit("1.5M"), 1.5 * MiB);
    assert.equal(parseBwlimit("50MiB/s"), 50 * MiB);
    assert.equal(parseBwlimit("50MB"), 50 * MiB);
    assert.equal(parseBwlimit(" 64K "), MIN_BWLIMIT);
    assert.equal(parseBwlimit(100000), 100000);
    assert.equal(parseBwlimit("100000"), 100000);
    for (const bad of ["", "M", "abc", "-5M", "5T", "5 M B", "1e6", "0x10M", "2000G"]) {
      assert.throws(() => parseBwlimit(bad), (e) => e instanceof UsageError && /Invalid --bwlimit .*50M/.test(e.message), bad);
    }
    // rsync's bare 1000 is KiB/s; here it is bytes, below the floor: refused, not a crawl.
    assert.throws(() => parseBwlimit("1000"), (e) => e instanceof UsageError && /lowest limit is 64K/.test(e.message));
    assert.throws(() => parseBwlimit("63K"), /lowest limit is 64K/);
  });

  test("TokenBucket: starts full at its burst, overdraws, waits out its debt, saves at most its burst", () => {
    let now = 1000;
    const bucket = new TokenBucket({ bytesPerSecond: 1000, burst: 100, now: () => now });
    assert.equal(bucket.burst, 100);
    assert.equal(bucket.waitMs(), 0);
    bucket.take(100);
    assert.equal(bucket.waitMs(), 0, "empty is not in debt");
    bucket.take(500);
    assert.equal(bucket.waitMs(), 500, "500 bytes of debt at 1000/s");
    now += 250;
    assert.equal(bucket.waitMs(), 250);
    now += 250;
    assert.equal(bucket.waitMs(), 0);
    now += 60_000;
    bucket.take(101);
    assert.equal(bucket.waitMs(), 1, "a minute idle saved only the burst (100 bytes)");
    assert.equal(new TokenBucket({ bytesPerSecond: 8 * MiB }).burst, MiB, "default burst: 1/8 s");
    assert.throws(() => new TokenBucket({ bytesPerSecond: 0 }), RangeError);

    // Spending whenever it is out of debt, for 10 s: at most burst + rate·T + the last take.
    now = 0;
    const b = new TokenBucket({ bytesPerSecond: 1000, burst: 100, now: () => now });
    let spent = 0;
    for (; now <= 10_000; now += 7) {
      if (b.waitMs() === 0) {
        b.take(333);
        spent += 333;
      }
    }
    assert.ok(spent <= 100 + 1000 * 10 + 333, `${spent} bytes in 10 s`);
    assert.ok(spent >= 1000 * 10 - 333, `${spent} bytes in 10 s`);
  });

  test("RateLimitedChannel sends: in order, at the rate; waiting records show as backlog and activity; close(reason) rejects them", { timeout: 10_000 }, async () => {
    const [a, b] = memoryPair({ maxBytes: 64 * MiB });
    const rate = 1 * MiB;
    let busy = 0;
    const limited = new RateLimitedChannel(a, {
      send: new TokenBucket({ bytesPerSecond: rate }),
      activity: { begin: () => void busy++, end: () => void busy-- },
    });
    const record = (i: number) => new Uint8Array(32 * KiB - RECORD_OVERHEAD).fill(i);
    const started = performance.now();
    const sends = Array.from({ length: 16 }, (_, i) => limited.send(record(i)));
    // 11 records of 32 KiB wait (5 passed on the burst): counted as unsent bytes of a link.
    assert.equal(limited.sendBacklog(), (11 * 32 * KiB) / DEFAULT_MAX_UNSENT_BYTES, "records wait for the bucket: the limit is the link");
    assert.equal(busy, 1, "activity begun while records wait");
    const received: number[] = [];
    for (let i = 0; i < 16; i++) received.push((await b.receive())![0]);
    await Promise.all(sends);
    const seconds = (performance.now() - started) / 1000;
    assert.deepEqual(received, [...Array(16).keys()]);
    // 512 KiB at 1 MiB/s, the burst (128 KiB) and the first record free: ≥ 352 KiB worth.
    assert.ok(seconds >= 0.33, `${seconds} s`);
    assert.ok(seconds < 2, `${seconds} s`);
    assert.equal(limited.sendBacklog(), 0);
    assert.equal(busy, 0, "activity ended with the queue");

    // A bucket deep in debt: everything waits here until close(reason) rejects it.
    const bucket = new TokenBucket({ bytesPerSecond: rate });
    bucket.take(100 * MiB);
    const held = new RateLimitedChannel(a, { send: bucket, activity: { begin: () => void busy++, end: () => void busy-- } });
    const stuck = [held.send(record(1)), held.send(record(2))];
    assert.equal(busy, 1);
    const reason = new Error("test over");
    held.close(reason);
    for (const s of stuck) await assert.rejects(s, (e) => e === reason);
    await assert.rejects(held.send(record(3)), (e) => e === reason);
    assert.equal(busy, 0);
  });

  test("RateLimitedChannel receives: records are taken from the inner channel no faster than the rate", { timeout: 10_000 }, async () => {
    const [a, b] = memoryPair({ maxBytes: 64 * MiB });
    const limited = new RateLimitedChannel(b, { receive: new TokenBucket({ bytesPerSecond: MiB }) });
    const sends = Array.from({ length: 16 }, (_, i) => a.send(new Uint8Array(32 * KiB - RECORD_OVERHEAD).fill(i)));
    a.close();
    await Promise.all(sends);
    const started = performance.now();
    const received: number[] = [];
    for (let r = await limited.receive(); r !== null; r = await limited.receive()) received.push(r[0]);
    const seconds = (performance.now() - started) / 1000;
    assert.deepEqual(received, [...Array(16).keys()]);
    assert.ok(seconds >= 0.33, `${seconds} s`);
    assert.ok(seconds < 2, `${seconds} s`);
  });

  test("a 200 MiB random first copy at --bwlimit 20M takes at least 9 s and stays under the limit: push, then pull", { timeout: 150_000 }, async () => {
    await withCliSetup({}, async ({ dir, client, root, remote }) => {
      const limit = 20 * MiB;
      const src = path.join(dir, "vm.img");
      writeData(src, 200 * MiB, "random");
      const back = path.join(dir, "back.img");
      for (const mode of ["push", "pull"] as const) {
        const args = mode === "push" ? [src, `${remote}:vm.img`] : [`${remote}:vm.img`, back];
        const started = performance.now();
        const r = await runCli([mode, "--accept-new", "--json", "--bwlimit", "20M", ...args], { config: client, timeoutMs: 60_000 });
        const wall = (performance.now() - started) / 1000;
        assert.equal(r.code, 0, r.stderr);
        const s = summaryOf(r.stdout);
        const wire = Number(mode === "push" ? s.wireBytesSent : s.wireBytesReceived);
        const seconds = Number(s.seconds);
        assert.ok(wire >= 200 * MiB, `${mode}: ${wire} bytes on the wire`);
        assert.ok(seconds >= 9 && wall >= 9, `${mode}: ${seconds} s (${wall} s in all): faster than 20M allows`);
        assert.ok(wire / seconds <= limit * 1.1, `${mode}: ${(wire / seconds / MiB).toFixed(1)} MiB/s on the wire`);
      }
      assert.equal(fileHash(path.join(root, "vm.img")), fileHash(src));
      assert.equal(fileHash(back), fileHash(src));
    });
  });

  test("a record waiting 4 s for a 64K limit does not trip --idle-timeout 1 (the wait is ours): push and pull; sync refuses --bwlimit", { timeout: 60_000 }, async () => {
    await withCliSetup({}, async ({ dir, client, root, remote }) => {
      const src = path.join(dir, "small.img");
      writeData(src, 256 * KiB, "random");
      const back = path.join(dir, "back.img");
      for (const mode of ["push", "pull"] as const) {
        const args = mode === "push" ? [src, `${remote}:small.img`] : [`${remote}:small.img`, back];
        const r = await runCli(
          [mode, "--accept-new", "--json", "--bwlimit", "64K", "--block-size", "256K", "--idle-timeout", "1", ...args],
          { config: client, timeoutMs: 30_000 },
        );
        assert.equal(r.code, 0, `${mode}: ${r.stderr}`);
        assert.ok(Number(summaryOf(r.stdout).seconds) >= 3.5, `${mode}: ${r.stdout}`);
      }
      assert.equal(fileHash(path.join(root, "small.img")), fileHash(src));
      assert.equal(fileHash(back), fileHash(src));

      const local = await runCli(["sync", "--bwlimit", "5M", src, path.join(dir, "copy.img")], { config: client });
      assert.equal(local.code, 2, local.stderr);
      assert.match(local.stderr, /bwlimit/);
      assert.ok(!fs.existsSync(path.join(dir, "copy.img")));
    });
  });

  test("ssync listen --bwlimit 8M is the total of its sessions: two 32 MiB pushes at once take ≥ 7.2 s; a pull ≥ 3.6 s", { timeout: 90_000 }, async () => {
    await withCliSetup({ listenArgs: ["--bwlimit", "8M"], pinHostKey: true }, async ({ dir, client, root, remote }) => {
      const files = ["a.img", "b.img"].map((name) => path.join(dir, name));
      for (const file of files) writeData(file, 32 * MiB, "random");
      const started = performance.now();
      const pushes = await Promise.all(files.map((file) => runCli(["push", "--json", file, remote], { config: client })));
      const both = (performance.now() - started) / 1000;
      for (const r of pushes) assert.equal(r.code, 0, r.stderr);
      // 64 MiB at 8 MiB/s: 8 s in all (a limit per session would let them through in 4 s).
      assert.ok(both >= 7.2, `two pushes in ${both} s`);
      const back = path.join(dir, "back.img");
      const pull = await runCli(["pull", "--json", `${remote}:a.img`, back], { config: client });
      assert.equal(pull.code, 0, pull.stderr);
      assert.ok(Number(summaryOf(pull.stdout).seconds) >= 3.6, pull.stdout);
      for (const file of files) assert.equal(fileHash(path.join(root, path.basename(file))), fileHash(file));
      assert.equal(fileHash(back), fileHash(files[0]));
    });
  });

  test("a push under --bwlimit compresses (auto): the limit is the link, and its queue backs up", { timeout: 60_000 }, async () => {
    await withCliSetup({}, async ({ dir, client, remote }) => {
      // Hex text: zstd halves it. Over the bare loopback "auto" sends it raw (the link keeps up).
      const src = path.join(dir, "text.img");
      // Raw: the first 16 MiB (the DATA window, planned before the queue backs up), then the
      // trial's plain phase and the jobs started during it (~16 MiB); the rest compressed.
      writeData(src, 80 * MiB, "hex");
      const r = await runCli(["push", "--accept-new", "--json", "--bwlimit", "8M", src, `${remote}:text.img`], { config: client });
      assert.equal(r.code, 0, r.stderr);
      const s = summaryOf(r.stdout);
      assert.equal(s.dataBytesSent, 80 * MiB);
      assert.ok(Number(s.dataBytesOnWire) < 0.85 * 80 * MiB, `${s.dataBytesOnWire} of ${s.dataBytesSent} bytes on the wire`);
    });
  });
});
