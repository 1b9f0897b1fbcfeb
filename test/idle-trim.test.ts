/**
 * A listener at rest gives its allocator's free memory back (listener/idle-trim.ts): the
 * scheduling of the trim, and a real `ssync listen` whose anonymous memory falls after a
 * session once it has been idle for IDLE_TRIM_MS.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { IDLE_TRIM_MS, IdleTrim } from "../src/listener/idle-trim.ts";
import { libc } from "../src/platform/libc.ts";
import { giveBackFreeMemory } from "../src/platform/malloc-tuning.ts";
import { withCliSetup } from "./helpers/cli-setup.ts";
import { runCli } from "./helpers/network.ts";

const MiB = 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("idle trim", () => {
  test("one trim after the delay; busy() cancels it; a second idle() moves it; a throwing trim is swallowed", async () => {
    let trims = 0;
    using t = new IdleTrim({ delayMs: 40, trim: () => trims++ });
    t.idle();
    await sleep(120);
    assert.equal(trims, 1, "one trim after the delay");
    t.idle();
    t.busy();
    await sleep(120);
    assert.equal(trims, 1, "busy() cancelled it");
    t.idle();
    await sleep(20);
    t.idle();
    await sleep(120);
    assert.equal(trims, 2, "two idle() calls, one trim");
    using failing = new IdleTrim({ delayMs: 10, trim: () => { throw new Error("no"); } });
    failing.idle();
    await sleep(50);
    failing.idle(); // still usable
    await sleep(50);
  });

  test("without FFI or glibc, or with the user's malloc options, nothing is trimmed", () => {
    assert.equal(giveBackFreeMemory(null, {}), false);
    assert.equal(giveBackFreeMemory({ ...libc!, mallocTrim: undefined }, {}), false);
    let calls = 0;
    const counting = { ...libc!, mallocTrim: () => (calls++, 1) };
    assert.equal(giveBackFreeMemory(counting, {}), true);
    assert.equal(giveBackFreeMemory(counting, { GLIBC_TUNABLES: "glibc.malloc.trim_threshold=65536" }), false);
    assert.equal(giveBackFreeMemory(counting, { MALLOC_TRIM_THRESHOLD_: "65536" }), false);
    assert.equal(calls, 1, "trimmed only without the user's options");
  });

  const reason = !fs.existsSync("/proc/self/status") ? "no /proc" : libc?.mallocTrim === undefined ? "no glibc malloc_trim through FFI here" : undefined;
  test("a listener at rest after a 64 MiB push holds less anonymous memory than right after it", { skip: reason ?? false, timeout: 90_000 }, async () => {
    await withCliSetup({ pinHostKey: true }, async ({ dir, client, listener, remote }) => {
      const src = path.join(dir, "random.img");
      fs.writeFileSync(src, randomBytes(64 * MiB));
      const rssAnon = () => Number(/RssAnon:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${listener.child.pid}/status`, "utf8"))![1]) * 1024;
      const r = await runCli(["push", "--no-cache", src, `${remote}:random.img`], { config: client });
      assert.equal(r.code, 0, r.stderr);
      const after = rssAnon();
      // Freed buffers sit in glibc's arenas until the trim: without it the figure stays put.
      const deadline = Date.now() + IDLE_TRIM_MS + 5000;
      let rest = after;
      while (Date.now() < deadline && after - rest < 3 * MiB) {
        await sleep(200);
        rest = rssAnon();
      }
      assert.ok(after - rest >= 3 * MiB, `anonymous memory ${(after / MiB).toFixed(1)} MiB right after the push, ${(rest / MiB).toFixed(1)} MiB ${IDLE_TRIM_MS + 5000} ms later`);
    });
  });
});
