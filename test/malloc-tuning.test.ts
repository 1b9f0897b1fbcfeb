import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import process from "node:process";
import { libc, type Libc } from "../src/platform/libc.ts";
import { M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, MMAP_THRESHOLD_BYTES, tune, TRIM_THRESHOLD_BYTES } from "../src/platform/malloc-tuning.ts";

/** malloc-tuning.ts: glibc keeps a sync's MiB buffers in its arenas instead of faulting them in again. */

const probe = fileURLToPath(new URL("./helpers/fault-probe.ts", import.meta.url));
// deno-lint-ignore no-explicit-any
const Deno = (globalThis as any).Deno;

/** Runs the probe in a fresh process of this runtime. */
function runProbe(mode: "tuned" | "default"): { tuning?: { tuned: boolean; reason?: string }; faults: number; pages: number; released: number; buffers: number } {
  const [cmd, args] = Deno ? [Deno.execPath(), ["run", "-A", "--no-check", probe, mode]] : [process.execPath, [probe, mode]];
  // Without the user's own allocator settings or a preloaded allocator: glibc's defaults are the baseline.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(MALLOC_[A-Z_]+|GLIBC_TUNABLES|LD_PRELOAD)$/.test(k)));
  const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 60_000, env });
  assert.equal(r.status, 0, `fault probe (${mode}) failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").pop()!);
}

const glibc = libc?.mallopt !== undefined;

test("tuned, freed MiB buffers are reused in place: a fraction of the page faults glibc's defaults take", { skip: glibc ? false : "needs glibc's mallopt through FFI" }, (t) => {
  const tuned = runProbe("tuned");
  const plain = runProbe("default");
  assert.deepEqual(tuned.tuning, { tuned: true });
  for (const r of [tuned, plain]) assert.equal(r.released, r.buffers, "every probe buffer freed at once, not by the GC");
  // Untuned, each round's buffers go back to the kernel (munmap or trim) and fault in again
  // (on Node its typed arrays happen not to; its cipher outputs, half the pages, do). A runtime
  // or allocator that keeps them anyway leaves nothing for the tuning to show.
  if (plain.faults <= plain.pages / 4) return t.skip(`untuned, only ${plain.faults} faults for ${plain.pages} pages: this runtime's allocator keeps freed buffers anyway`);
  assert.ok(tuned.faults * 10 < plain.faults, `tuned: ${tuned.faults} faults, untuned ${plain.faults}`);
});

/** A glibc stand-in that records the settings asked and refuses those listed. */
function recording(refuse: number[] = []): Libc & { calls: [number, number][] } {
  const calls: [number, number][] = [];
  return { ...(libc ?? {} as Libc), calls, mallopt: (p: number, v: number) => (calls.push([p, v]), refuse.includes(p) ? 0 : 1) };
}

test("the mmap threshold goes first; a refused one leaves the trim threshold alone (either fixes both)", () => {
  const ok = recording();
  assert.deepEqual(tune(ok), { tuned: true });
  assert.deepEqual(ok.calls, [[M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES], [M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES]]);
  const refused = recording([M_MMAP_THRESHOLD]);
  assert.deepEqual(tune(refused), { tuned: false, reason: "glibc refused the mmap threshold" });
  assert.deepEqual(refused.calls, [[M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES]]);
  assert.deepEqual(tune(recording([M_TRIM_THRESHOLD])), { tuned: false, reason: "glibc refused the trim threshold" });
});

test("the user's own malloc settings in the environment stand: nothing is changed", () => {
  for (const env of [{ GLIBC_TUNABLES: "glibc.malloc.arena_max=2" }, { MALLOC_ARENA_MAX: "2" }, { MALLOC_ARENA_TEST: "1" }, { MALLOC_TRIM_THRESHOLD_: "0" }]) {
    const c = recording();
    assert.deepEqual(tune(c, env), { tuned: false, reason: `the environment sets ${Object.keys(env)[0]}: the user's malloc options stand` });
    assert.deepEqual(c.calls, []);
  }
  assert.deepEqual(tune(recording(), { GLIBC_TUNABLES: "glibc.pthread.rseq=0" }), { tuned: true }, "other glibc tunables are not malloc's");
});

test("without FFI or without glibc's mallopt the allocator is left as it is, and the reason said", () => {
  assert.deepEqual(tune(null), { tuned: false, reason: "no FFI" });
  if (libc) {
    const { mallopt: _, ...other } = libc;
    assert.deepEqual(tune(other), { tuned: false, reason: "not glibc (no mallopt)" });
  }
});
