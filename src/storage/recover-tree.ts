/**
 * At a listener's start: every journal an interrupted sync left under its root, for its
 * exports or under its folder exports is completed or rolled back (recover-journal.ts), so that the files it serves are
 * whole from the first session on, whoever opens them first.
 *
 * The walk follows no symbolic link, visits at most MAX_ENTRIES entries (a root that large is
 * left to each file's next writer, which recovers it anyway) and never stops at one file's
 * failure: each is logged.
 */
import fs from "node:fs";
import nodePath from "node:path";
import { openDestination } from "./open-destination.ts";
import { journalOf } from "./work-files.ts";

const MAX_ENTRIES = 200_000;
const JOURNAL = /^\.(.+)\.ssync-journal$/;

export async function recoverTree(
  root: string,
  o: { exports?: Iterable<string>; journalDir?: string; log: (message: string) => void },
): Promise<void> {
  const recover = async (file: string) => {
    try {
      const store = await openDestination(file, { create: false, journalDir: o.journalDir, log: o.log });
      await store[Symbol.asyncDispose]();
    } catch (e) {
      o.log(`cannot recover the interrupted sync of ${file}: ${(e as Error).message}`);
    }
  };
  const dirs = [root];
  for (const path of o.exports ?? []) {
    let st: fs.BigIntStats;
    try {
      st = fs.statSync(path, { bigint: true });
    } catch {
      continue; // checked at start; a missing export is refused per session
    }
    if (st.isDirectory()) {
      dirs.push(path); // a folder export is walked like the root
      continue;
    }
    const journal = journalOf(path, { kind: st.isBlockDevice() ? "block-device" : "file", rdev: st.rdev, journalDir: o.journalDir });
    if (fs.existsSync(journal.path)) await recover(path);
  }
  let seen = 0;
  while (dirs.length > 0) {
    const dir = dirs.pop()!;
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch (e) {
      o.log(`cannot look for interrupted syncs in ${dir}: ${(e as Error).message}`);
      continue;
    }
    for (const entry of entries) {
      if (++seen > MAX_ENTRIES) {
        o.log(`stopped looking for interrupted syncs under ${root} after ${MAX_ENTRIES} entries; each file's next sync still recovers it`);
        return;
      }
      const at = nodePath.join(dir, entry.name);
      if (entry.isDirectory()) dirs.push(at);
      const m = entry.isFile() ? JOURNAL.exec(entry.name) : null;
      if (m) await recover(nodePath.join(dir, m[1]));
    }
  }
}
