/**
 * Keeps glibc's allocator from giving a sync's MiB-sized buffers back to the kernel between
 * one use and the next (issue 9).
 *
 * Why: a network sync allocates and frees buffers of about a record (MAX_RECORD: 1 MiB and a
 * header) at the rate its data moves: read buffers, cipher outputs (node:crypto allocates each
 * update's output twice), socket chunks, decompressed DATA. glibc serves a buffer that large
 * from mmap (at or above its mmap threshold, 128 KiB until it raises it after such a buffer
 * is freed) or from an arena whose free top it trims back to the kernel once it exceeds the
 * trim threshold (128 KiB, then twice the raised mmap threshold). Either way the next buffer
 * faults its pages in again, each one zeroed: a 1.6 GiB first copy push made 400,000–650,000
 * minor faults in the client (about one per 4 KiB it moved) and 100,000–250,000 in the
 * listener; on a VM each may also be a host fault, which is why that cost swings from run to
 * run.
 *
 * What: mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), so that every buffer up to a record
 * comes from an arena; then, only if that took, mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
 * so that an arena keeps that much free memory at its top for the next buffers. The order
 * matters: setting either one stops glibc adjusting both, so a trim threshold set alone would
 * pin the mmap threshold at 128 KiB and make every buffer an mmap.
 *
 * Gain and cost (scripts/bench, medians of 3, same run, 2 cores): a first copy push over
 * loopback 8.17 → 6.67 s; each arena may keep up to TRIM_THRESHOLD_BYTES free (threads share
 * arenas up to 8 per core), and the largest peak RSS rose 173 → 183 MiB (client) and 158 →
 * 165 MiB (listener). A process that runs a network command calls this: each side of a
 * network sync is its own process, with room under issue 9's 200 MiB. `ssync sync` does not:
 * both its sides share one process, near that bound already (190–200 MiB), and without
 * encryption it faults a third as much.
 *
 * giveBackFreeMemory (below) is the other half, for a process at rest: the free memory the
 * trim threshold lets each arena keep goes back to the kernel (a listener between sessions).
 *
 * Invariants: never throws; without glibc, FFI or mallopt, or when the user set glibc's malloc
 * options in the environment (GLIBC_TUNABLES, MALLOC_*: MALLOC_ARENA_MAX has no trailing _), it leaves the allocator as it is and
 * says why. It changes process-wide settings, which every thread's next allocation sees; once
 * is enough, and later calls return the first call's outcome.
 */
import process from "node:process";
import { type Libc, libc as ffiLibc } from "./libc.ts";

/** glibc's mallopt parameter numbers (malloc.h). */
export const M_TRIM_THRESHOLD = -1;
export const M_MMAP_THRESHOLD = -3;

/** Buffers below this come from an arena: above MAX_RECORD and a decompressed DATA, with room. */
export const MMAP_THRESHOLD_BYTES = 2 << 20;
/** Free bytes an arena keeps at its top: more than the MiB buffers a thread frees between two allocations. */
export const TRIM_THRESHOLD_BYTES = 12 << 20;

export type MallocTuning = { tuned: true } | { tuned: false; reason: string };

let outcome: MallocTuning | undefined;

/** Tunes this process's allocator once (see the top of this file); returns what happened. */
export function tuneMalloc(c: Libc | null = ffiLibc): MallocTuning {
  outcome ??= tune(c, environment());
  return outcome;
}

/** The tuning itself, every call (tests); tuneMalloc is the once-per-process entry. */
export function tune(c: Libc | null, env: Record<string, string | undefined> = {}): MallocTuning {
  const own = usersMallocOption(env);
  if (own !== undefined) return { tuned: false, reason: `the environment sets ${own}: the user's malloc options stand` };
  if (c === null) return { tuned: false, reason: "no FFI" };
  if (c.mallopt === undefined) return { tuned: false, reason: "not glibc (no mallopt)" };
  if (c.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) !== 1) return { tuned: false, reason: "glibc refused the mmap threshold" };
  if (c.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) !== 1) return { tuned: false, reason: "glibc refused the trim threshold" };
  return { tuned: true };
}

/** The environment variable by which the user set glibc's malloc options, if any. */
function usersMallocOption(env: Record<string, string | undefined>): string | undefined {
  return Object.keys(env).find((k) => env[k] !== undefined && (/^MALLOC_[A-Z_]+$/.test(k) || (k === "GLIBC_TUNABLES" && env[k]!.includes("glibc.malloc."))));
}

function environment(): Record<string, string | undefined> {
  try {
    return { ...process.env };
  } catch {
    return {}; // Deno without --allow-env: nothing of the user's can be seen, nor honoured
  }
}

/**
 * Gives the free memory of every arena back to the kernel now (malloc_trim(0)): what a
 * process's buffers left behind, which the trim threshold above lets each arena keep. For a
 * process about to sit idle (a listener between sessions); it walks the arenas under their
 * locks, so not for a busy one. True when some memory went back; false when none did, without
 * glibc or FFI, or when the user set glibc's malloc options (their trim threshold stands too).
 */
export function giveBackFreeMemory(c: Libc | null = ffiLibc, env: Record<string, string | undefined> = environment()): boolean {
  if (usersMallocOption(env) !== undefined) return false;
  return c?.mallocTrim?.() === 1;
}
