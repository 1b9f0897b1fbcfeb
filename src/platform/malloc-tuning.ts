/**
 * Keeps glibc's allocator from giving a sync's MiB-sized buffers back to the kernel between
 * one use and the next (issue 9).
 *
 * Why: a network sync allocates and frees buffers of about a record (≤ MAX_RECORD, 1 MiB) at
 * the rate its data moves: read buffers, cipher outputs (node:crypto allocates each update's
 * output twice), socket chunks, decompressed DATA. glibc serves a buffer that large from mmap
 * (at or above its mmap threshold, which it raises only after such a buffer is freed) or from
 * an arena whose free top it trims back to the kernel once it exceeds the trim threshold (by
 * default twice the mmap threshold). Either way the next buffer faults its pages in again,
 * each one zeroed: a 1.6 GiB first copy push made 400,000–650,000 minor faults in the client
 * (about one per 4 KiB it moved) and 100,000–250,000 in the listener; on a VM each may also be
 * a host fault, which is why that cost swings from run to run.
 *
 * What: mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), so that every buffer up to a record
 * comes from an arena; then, only if that took, mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
 * so that an arena keeps that much free memory at its top for the next buffers. The order
 * matters: setting either one stops glibc adjusting both, so a trim threshold set alone would
 * pin the mmap threshold at 128 KiB and make every buffer an mmap.
 *
 * Gain and cost (scripts/bench, medians of 3, same run): a first copy push over loopback
 * 8.17 → 6.67 s; each arena a thread uses may keep up to TRIM_THRESHOLD_BYTES free, and the
 * largest peak RSS rose 173 → 183 MiB (client) and 158 → 165 MiB (listener). The network
 * commands call this: each side of a network sync is its own process, with room under issue
 * 9's 200 MiB. A local sync does not: both its sides share one process, near that bound
 * already (190–200 MiB), and without encryption it faults a third as much.
 *
 * Invariants: never throws; without glibc, FFI or mallopt it leaves the allocator as it is
 * and says why. It changes process-wide settings, which every thread's next allocation
 * sees; once is enough, and later calls return the first call's outcome.
 */
import { type Libc, libc as ffiLibc } from "./libc.ts";

/** glibc's mallopt parameter numbers (malloc.h). */
export const M_TRIM_THRESHOLD = -1;
export const M_MMAP_THRESHOLD = -3;

/** Buffers below this come from an arena: above MAX_RECORD and a decompressed DATA, with room. */
export const MMAP_THRESHOLD_BYTES = 2 << 20;
/** Free bytes an arena keeps at its top: a sync's buffers in flight churn through less than this per thread. */
export const TRIM_THRESHOLD_BYTES = 12 << 20;

export type MallocTuning = { tuned: true } | { tuned: false; reason: string };

let outcome: MallocTuning | undefined;

/** Tunes this process's allocator once (see the top of this file); returns what happened. */
export function tuneMalloc(c: Libc | null = ffiLibc): MallocTuning {
  outcome ??= tune(c);
  return outcome;
}

/** The tuning itself, every call (tests); tuneMalloc is the once-per-process entry. */
export function tune(c: Libc | null): MallocTuning {
  if (c === null) return { tuned: false, reason: "no FFI" };
  if (c.mallopt === undefined) return { tuned: false, reason: "not glibc (no mallopt)" };
  if (c.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) !== 1) return { tuned: false, reason: "glibc refused the mmap threshold" };
  if (c.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) !== 1) return { tuned: false, reason: "glibc refused the trim threshold" };
  return { tuned: true };
}
