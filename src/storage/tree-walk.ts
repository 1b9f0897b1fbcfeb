/**
 * A walk of a folder tree that never follows a symbolic link, streamed: one folder's sorted
 * listing per level of depth is held, never the whole tree.
 *
 * 1. The root is opened O_DIRECTORY (the name the user gave may pass through links); every
 *    folder below it is opened O_DIRECTORY|O_NOFOLLOW through /proc/self/fd/<parent>/<name>,
 *    so a folder replaced by a link during the walk fails to open instead of leading outside;
 * 2. each folder is listed and sorted by name (code units: a stable order for a given tree),
 *    each entry lstat'ed through its pinned parent (`at`); ssync's own work files
 *    (work-files.ts isWorkFileName: journals, partial files, lock files) are never listed;
 * 3. entries come out in pre-order: a folder's entry, its contents (when `descend` says so),
 *    then the same folder again with `leave: true` (its descriptor still open, for rmdir).
 *
 * Invariants: an entry's `at` names it through its parent's pinned descriptor and is valid
 * only until the walk is resumed; a folder with more than MAX_FOLDER_ENTRIES entries, or
 * deeper than MAX_DEPTH, ends the walk with an error that says so (memory stays bounded).
 */
import fs from "node:fs";
import nodePath from "node:path";
import { StorageError, storageError } from "./storage-error.ts";
import { isWorkFileName } from "./work-files.ts";

export const MAX_FOLDER_ENTRIES = 1_000_000;
export const MAX_DEPTH = 256;

export type TreeEntryKind = "file" | "folder" | "symlink" | "block-device" | "char-device" | "fifo" | "socket";

export interface TreeEntry {
  /** Relative to the root, "/"-separated, never "" (the root itself is not an entry). */
  readonly path: string;
  readonly kind: TreeEntryKind;
  /** lstat of the entry (never of what a link points to). */
  readonly stat: fs.BigIntStats;
  /** The entry through its parent's pinned descriptor: /proc/self/fd/<parent>/<name>. */
  readonly at: string;
  /** A folder's second appearance, after its contents. */
  readonly leave?: boolean;
}

export interface WalkOptions {
  /** Whether to list the contents of the folder at `path` (default: every folder). */
  descend?: (path: string) => boolean;
}

export function entryKind(st: fs.BigIntStats | fs.Stats): TreeEntryKind {
  if (st.isFile()) return "file";
  if (st.isDirectory()) return "folder";
  if (st.isSymbolicLink()) return "symlink";
  if (st.isBlockDevice()) return "block-device";
  if (st.isCharacterDevice()) return "char-device";
  if (st.isFIFO()) return "fifo";
  return "socket";
}

/** Every entry under `root` (see the module comment); the root must be a folder. */
export function* walkTree(root: string, o: WalkOptions = {}): Generator<TreeEntry> {
  const C = fs.constants;
  let rootFd: number;
  try {
    rootFd = fs.openSync(root, C.O_RDONLY | C.O_DIRECTORY);
  } catch (e) {
    throw storageError("read the folder", root, { cause: e });
  }
  try {
    yield* walkFolder(rootFd, { root, prefix: "", depth: 0, descend: o.descend });
  } finally {
    fs.closeSync(rootFd);
  }
}

function* walkFolder(
  fd: number,
  o: { root: string; prefix: string; depth: number; descend?: (path: string) => boolean },
): Generator<TreeEntry> {
  const C = fs.constants;
  const shown = o.prefix === "" ? o.root : nodePath.join(o.root, o.prefix);
  if (o.depth > MAX_DEPTH) throw storageError("read the folder", shown, { code: "ELOOP", reason: `it is more than ${MAX_DEPTH} folders deep` });
  for (const name of listFolder(fd, shown)) {
    const path = o.prefix === "" ? name : `${o.prefix}/${name}`;
    const at = `/proc/self/fd/${fd}/${name}`;
    let stat: fs.BigIntStats;
    try {
      stat = fs.lstatSync(at, { bigint: true });
    } catch (e) {
      if ((e as { code?: string }).code === "ENOENT") continue; // removed meanwhile
      throw storageError("read", nodePath.join(o.root, path), { cause: e });
    }
    const kind = entryKind(stat);
    yield { path, kind, stat, at };
    if (kind !== "folder" || o.descend?.(path) === false) {
      if (kind === "folder") yield { path, kind, stat, at, leave: true };
      continue;
    }
    let child: number;
    try {
      child = fs.openSync(at, C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW);
    } catch (e) {
      throw storageError("read the folder", nodePath.join(o.root, path), { cause: e });
    }
    try {
      const now = fs.fstatSync(child, { bigint: true });
      if (now.dev !== stat.dev || now.ino !== stat.ino) {
        throw storageError("read the folder", nodePath.join(o.root, path), { code: "EAGAIN", reason: "it was replaced during the walk" });
      }
      yield* walkFolder(child, { ...o, prefix: path, depth: o.depth + 1 });
    } finally {
      fs.closeSync(child);
    }
    yield { path, kind, stat, at, leave: true };
  }
}

/** The names in the folder open as `fd`, sorted, without ssync's work files. */
function listFolder(fd: number, shown: string): string[] {
  const names: string[] = [];
  let dir: fs.Dir;
  try {
    dir = fs.opendirSync(`/proc/self/fd/${fd}`);
  } catch (e) {
    throw storageError("read the folder", shown, { cause: e });
  }
  try {
    for (let d = dir.readSync(); d !== null; d = dir.readSync()) {
      if (isWorkFileName(d.name)) continue;
      if (names.length >= MAX_FOLDER_ENTRIES) {
        throw storageError("read the folder", shown, { code: "E2BIG", reason: `it holds more than ${MAX_FOLDER_ENTRIES} entries` });
      }
      names.push(d.name);
    }
  } catch (e) {
    if (e instanceof StorageError) throw e;
    throw storageError("read the folder", shown, { cause: e });
  } finally {
    dir.closeSync();
  }
  return names.sort();
}
