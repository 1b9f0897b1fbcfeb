/**
 * fsync of a folder shared by the files that commit in it at about the same time (group
 * commit): a batch of small files renames many partial files into one folder, and each
 * rename must be on disk before its file's COMMIT_OK.
 *
 * Invariant: a caller's promise resolves only after an fsync of the folder that BEGAN after
 * the call (so after the caller's rename or unlink, which it made before calling). While one
 * fsync of a folder runs, every caller joins the single next one, which begins when the
 * running one ended; a failed fsync fails everyone who waited for it. Folders are told apart
 * by device and inode, so two names of one folder (such as /proc/self/fd/N paths of two
 * descriptors) share their fsyncs.
 */
import fs from "node:fs";
import { syncDirectory } from "./journaled-storage.ts";

/** Per folder: the fsync running, and the one queued behind it (at most one each). */
const running = new Map<string, Promise<void>>();
const queued = new Map<string, Promise<void>>();
let begun = 0;

/** How many folder fsyncs this module has begun (tests read it). */
export function folderSyncsBegun(): number {
  return begun;
}

/** Makes what was renamed, created or removed in `dir` before this call durable. */
export function syncFolderShared(dir: string): Promise<void> {
  let key: string;
  try {
    const st = fs.statSync(dir, { bigint: true });
    key = `${st.dev}:${st.ino}`;
  } catch (e) {
    return Promise.reject(e);
  }
  const waiting = queued.get(key);
  if (waiting) return waiting;
  const current = running.get(key);
  if (!current) return start(dir, key);
  const next = current.then(() => {}, () => {}).then(() => {
    queued.delete(key);
    return start(dir, key);
  });
  queued.set(key, next);
  return next;
}

function start(dir: string, key: string): Promise<void> {
  begun++;
  const p: Promise<void> = syncDirectory(dir).finally(() => {
    if (running.get(key) === p) running.delete(key);
  });
  running.set(key, p);
  return p;
}
