/**
 * Who gets into the listener's handshake, against attackers without a key (issue 7, "Why" 3):
 * 1. sockets idling in handshakes from 16 addresses, reopened as they are cut, never keep an
 *    authorized client out: the oldest pending handshake is evicted, not the newcomer;
 * 2. an address's new connections beyond its token bucket are closed before any crypto, and
 *    an authorized session gives its token back;
 * 3. refusal lines are rate-limited and summarised;
 * 4. the caps per IPv4 address, IPv6 /64 and /48, and the buckets, as data structures.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { connect } from "node:net";
import path from "node:path";
import { MODE_XX } from "../../protocol/constants.ts";
import { encodeHandshakeFrame } from "../../protocol/handshake-frame.ts";
import { encodePreamble } from "../../protocol/preamble.ts";
import { WorkerPool } from "../../src/engine/worker-pool.ts";
import { HandshakeSlots } from "../../src/listener/handshake-slots.ts";
import { TokenBuckets } from "../../src/listener/token-buckets.ts";
import { generateKeyPair } from "../../src/noise/x25519.ts";
import { fileHash, makeSparseFile, withTempDir } from "../helpers/sparse.ts";
import { authorize, clientSync, startListener, waitFor } from "../helpers/network.ts";
import { floodHandshakes, loopbackAddresses } from "../helpers/handshake-flood.ts";
import { rawConnect } from "../helpers/raw-client.ts";
import { dial } from "../../src/net/dial.ts";

const T = { timeout: 60_000 };
let pool: WorkerPool;
before(() => {
  pool = new WorkerPool({ size: 2 });
});
after(async () => {
  await pool[Symbol.asyncDispose]();
});

/** Connects from `localAddress`, sends the preamble and a message 1; resolves with the bytes it got back by close. */
function halfHandshake(port: number, localAddress: string): Promise<number> {
  return new Promise((resolve) => {
    let got = 0;
    const s = connect({ port, host: "127.0.0.1", localAddress });
    s.on("error", () => {});
    s.on("data", (c: Buffer) => {
      got += c.length;
      if (got >= 2 + 96) s.destroy();
    });
    s.once("connect", () => s.write(Buffer.concat([encodePreamble(MODE_XX), encodeHandshakeFrame(randomBytes(32))])));
    s.once("close", () => resolve(got));
  });
}

describe("admission to the handshake", () => {
  test("an authorized client connects within 2 s while 64 sockets from 16 addresses idle in handshakes, reopened as they are cut", T, async () => {
    await withTempDir(async (dir) => {
      const server = await startListener(dir, { pool });
      const key = generateKeyPair();
      authorize(server.authorizedKeys, key);
      const flood = floodHandshakes(server.listener.port, {
        addresses: loopbackAddresses(2, 16),
        perAddress: 4,
        styles: ["nothing", "preamble", "message1"],
      });
      try {
        await waitFor(() => flood.opened() >= 64, { timeoutMs: 10_000, what: "the flood's sockets" });
        await new Promise((r) => setTimeout(r, 300));
        const held = server.listener.load.handshakes;
        let most = 0;
        const sampler = setInterval(() => (most = Math.max(most, server.listener.load.handshakes)), 5);
        try {
          // Spread over more than the first-message deadline (2.5 s): the flood's sockets are
          // cut and reopened meanwhile.
          for (let attempt = 0; attempt < 6; attempt++) {
            if (attempt > 0) await new Promise((r) => setTimeout(r, 600));
            // dial's timeout bounds the TCP connect and the whole handshake: 2 s.
            const conn = await dial({
              host: "127.0.0.1",
              port: server.listener.port,
              staticKey: key,
              knownHostsFile: path.join(dir, "known_hosts"),
              acceptNew: true,
              timeoutMs: 2000,
            });
            await conn[Symbol.asyncDispose]();
          }
          const src = path.join(dir, "src.img");
          makeSparseFile(src, { size: 1 << 20, chunks: [{ offset: 0, length: 65536 }] });
          await clientSync(server, { mode: "push", local: src, name: "served.img", key, pool, knownHosts: path.join(dir, "known_hosts") });
          assert.equal(fileHash(path.join(server.root, "served.img")), fileHash(src));
        } finally {
          clearInterval(sampler);
        }
        assert.ok(held >= 60, `the flood held ${held} handshake slots`);
        assert.ok(most <= 64, `${most} handshakes at once; the cap is 64`);
        assert.ok(flood.opened() >= 64 + 40, `the flood reopened what was cut: ${flood.opened()} sockets opened`);
      } finally {
        await flood.stop();
        await server.listener.close();
      }
    });
  });

  test("beyond its token bucket an address is refused before any crypto; an authorized session gives its token back", T, async () => {
    await withTempDir(async (dir) => {
      const server = await startListener(dir, { pool, handshakeBurst: 3, handshakeRefillPerSecond: 0.01 });
      const key = generateKeyPair();
      authorize(server.authorizedKeys, key);
      try {
        const answers: number[] = [];
        for (let i = 0; i < 5; i++) answers.push(await halfHandshake(server.listener.port, "127.0.0.2"));
        // Three got message 2 (the listener's crypto); the other two not a byte.
        assert.deepEqual(answers, [98, 98, 98, 0, 0]);
        await waitFor(() => server.logs.filter((l) => /refused: too many new connections from 127\.0\.0\.2/.test(l)).length === 2, {
          timeoutMs: 5000,
          what: "two refusals in the log",
        });
        // Another address has its own bucket, and welcome sessions refund theirs: 6 > 3 in a row.
        for (let i = 0; i < 6; i++) {
          const conn = await rawConnect(server, key, dir);
          await conn[Symbol.asyncDispose]();
        }
      } finally {
        await server.listener.close();
      }
    });
  });

  test("refusal lines are rate-limited and summarised", T, async () => {
    await withTempDir(async (dir) => {
      const server = await startListener(dir, { pool, refusalLinesPerSecond: 3, handshakeBurst: 1000 });
      try {
        const n = 40;
        await Promise.all(Array.from({ length: n }, () =>
          new Promise<void>((resolve) => {
            const s = connect({ port: server.listener.port, host: "127.0.0.1", localAddress: "127.0.0.2" });
            s.on("error", () => {});
            s.once("connect", () => s.end(Buffer.from("GET / HTTP/1.0\r\n\r\n")));
            s.once("close", () => resolve());
          })));
        const counted = () => {
          const lines = server.logs.filter((l) => / refused: /.test(l)).length;
          const summarised = server.logs.map((l) => / (\d+) more refused from 127\.0\.0\.2 in the last [\d.]+ s$/.exec(l))
            .reduce((sum, m) => sum + (m ? Number(m[1]) : 0), 0);
          return { lines, summarised };
        };
        await waitFor(() => counted().lines + counted().summarised === n, { timeoutMs: 10_000, what: `all ${n} refusals accounted for` });
        // At most 3 lines per second, and the rest summarised.
        assert.ok(counted().lines <= 3 * 4, JSON.stringify(counted()));
        assert.ok(counted().summarised > 0, JSON.stringify(counted()));
      } finally {
        await server.listener.close();
      }
    });
  });
});

describe("caps and buckets as data", () => {
  test("per-prefix caps evict that prefix's oldest; the cap in all evicts the oldest of all", T, () => {
    const slots = new HandshakeSlots({ total: 5, capOf: (p) => (p.endsWith("/48") ? 3 : 2) });
    const evicted: string[] = [];
    const admit = (name: string, prefixes: string[]) => slots.admit(prefixes, (why) => evicted.push(`${name}: ${why}`));
    admit("a1", ["10.0.0.1"]);
    admit("a2", ["10.0.0.1"]);
    admit("a3", ["10.0.0.1"]); // the address's cap of 2: a1 goes
    assert.equal(evicted.length, 1);
    assert.match(evicted[0], /^a1: evicted: a newer connection from 10\.0\.0\.1 reached the cap of 2/);
    // Three /64s of one /48: the /48's cap of 3 evicts its oldest, whatever its /64.
    const released = admit("b1", ["2001:db8:1:1::/64", "2001:db8:1::/48"]);
    admit("b2", ["2001:db8:1:2::/64", "2001:db8:1::/48"]);
    released.release();
    admit("b3", ["2001:db8:1:3::/64", "2001:db8:1::/48"]);
    admit("b4", ["2001:db8:1:4::/64", "2001:db8:1::/48"]);
    assert.equal(evicted.length, 1, "b1 left on its own: nothing to evict yet");
    admit("b5", ["2001:db8:1:5::/64", "2001:db8:1::/48"]);
    assert.match(evicted[1], /^b2: .*from 2001:db8:1::\/48 reached the cap of 3/);
    // In all: a2, a3, b3, b4, b5 = 5; one more evicts the oldest of all, a2.
    admit("c1", ["10.0.0.9"]);
    assert.match(evicted[2], /^a2: evicted: a newer connection reached the cap of 5 handshakes/);
    assert.equal(slots.size, 5);
    slots.evictAll("stopping");
    assert.equal(slots.size, 0);
    assert.equal(evicted.length, 8);
  });

  test("token buckets: burst, refill, all-or-nothing over prefixes, refund, bounded entries", T, () => {
    let now = 0;
    const buckets = new TokenBuckets({ burst: 2, refillPerSecond: 4, maxEntries: 8, now: () => now });
    const v6 = ["2001:db8:1:1::/64", "2001:db8:1::/48"];
    assert.deepEqual(buckets.take(v6), { taken: true });
    assert.deepEqual(buckets.take(v6), { taken: true });
    assert.deepEqual(buckets.take(v6), { taken: false, empty: "2001:db8:1:1::/64" });
    // Another /64 of the same /48 finds the /48 empty: refused, and its own /64 is not charged.
    assert.deepEqual(buckets.take(["2001:db8:1:2::/64", "2001:db8:1::/48"]), { taken: false, empty: "2001:db8:1::/48" });
    now += 250; // one token back
    assert.deepEqual(buckets.take(["2001:db8:1:2::/64", "2001:db8:1::/48"]), { taken: true });
    buckets.refund(["2001:db8:1:2::/64", "2001:db8:1::/48"]);
    assert.deepEqual(buckets.take(["2001:db8:1:3::/64", "2001:db8:1::/48"]), { taken: true });
    for (let i = 0; i < 100; i++) buckets.take([`10.0.${i}.1`]);
    assert.ok(buckets.size <= 8, `${buckets.size} buckets kept`);
  });
});
