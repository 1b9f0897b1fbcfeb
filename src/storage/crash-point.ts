/**
 * Test-only crash injection. `SSYNC_TEST_CRASH=<point>[:<n>]` makes this process kill
 * itself with SIGKILL the n-th time (default 1st) it passes `<point>`, so that a test can
 * check what a crash at exactly that moment leaves on disk. Unset (always, outside tests),
 * `crashPoint` does nothing but one comparison.
 *
 * The points, in the order a committing sync passes them (storage/journaled-storage.ts,
 * storage/partial-storage.ts, storage/recover-journal.ts):
 *   journal-write:N      after the N-th record is written to the redo journal (no fsync yet)
 *   journal-synced       after the journal's fsync, before its COMMIT record
 *   committed            after the COMMIT record's fsync (the commit point), before applying
 *   apply:N              after the N-th record is applied to the destination
 *   destination-synced   after the destination's fsync, before the journal is removed
 *   journal-removed      after the journal is removed, before the directory's fsync
 *   recover:N            while recovery re-applies a committed journal, after the N-th record
 *   partial-write:N      a new file: after the N-th write to its partial file
 *   partial-synced       a new file: after its fsync, before the rename over its name
 *   renamed              a new file: after the rename, before the directory's fsync
 */
import process from "node:process";

const spec = parse(process.env.SSYNC_TEST_CRASH);
let passed = 0;

function parse(text: string | undefined): { point: string; n: number } | null {
  if (!text) return null;
  const m = /^([a-z-]+)(?::(\d+))?$/.exec(text.trim());
  if (!m) throw new Error(`SSYNC_TEST_CRASH=${text}: expected <point>[:<n>]`);
  return { point: m[1], n: m[2] === undefined ? 1 : Number(m[2]) };
}

/** Passes `point`; kills this process when SSYNC_TEST_CRASH names it (the n-th pass). */
export function crashPoint(point: string): void {
  if (spec === null || spec.point !== point) return;
  if (++passed < spec.n) return;
  process.kill(process.pid, "SIGKILL");
}
