/**
 * A walk of a folder tree that never follows a symbolic link, streamed as plain entries
 * (tree-entry.ts), one folder's sorted listing per level of depth held, never the whole tree.
 *
 * 1. The root is opened O_DIRECTORY (the name the user gave may pass through links); every
 *    folder below it is opened O_DIRECTORY|O_NOFOLLOW through /proc/self/fd/<parent>/<name>
 *    and must still be the folder lstat saw, so a folder replaced by a link during the walk
 *    is never entered;
 * 2. each folder is listed and sorted by name (code units: a stable order for a given tree),
 *    each entry lstat'ed through its pinned parent; ssync's own work files (journals, partial
 *    and lock files) are never listed, but mark the file they belong to `pending`;
 * 3. entries come out in pre-order: a folder, then its contents (when `descend` says so).
 *
 * Invariants:
 * - only ENOENT from lstat means "not there" (removed meanwhile); any other failure yields the
 *   entry with its `error`, and a folder that cannot be opened or listed is yielded with its
 *   `error` and nothing below it: a caller never takes an unreadable entry for an absent one;
 * - a name that is not valid UTF-8 (Node and Deno hand names over as strings, such a name
 *   decoded with U+FFFD, which then names nothing) is never listed: `note` is told, with its
 *   folder, and `undecodable` counts it;
 * - a folder that is `forbidden` (the other root of a sync: a bind mount, say) ends the walk
 *   with the error `refuse` makes, before its entry is yielded;
 * - more than `maxEntries` entries (MAX_TREE_ENTRIES) end the walk with E2BIG, deeper than
 *   MAX_DEPTH with ELOOP: memory stays bounded;
 * - every YIELD_EVERY entries the walk yields to the event loop and checks `signal`, so that
 *   Ctrl-C is honoured on a tree of any size.
 */
import fs from "node:fs";
import nodePath from "node:path";
import { setImmediate } from "node:timers";
import { StorageError, storageError } from "./storage-error.ts";
import { MAX_TREE_ENTRIES, type TreeEntry, type TreeEntryKind } from "./tree-entry.ts";
import { isWorkFileName, workFilePath } from "./work-files.ts";

export const MAX_DEPTH = 256;
export const YIELD_EVERY = 256;

export interface WalkOptions {
  /** Whether to list the contents of this folder (default: every folder). */
  descend?: (folder: TreeEntry) => boolean;
  /** Told what is left out and why: the folder's path ("" for the root) and a note. */
  note?: (folder: string, note: string) => void;
  signal?: AbortSignal;
  /** Default MAX_TREE_ENTRIES. */
  maxEntries?: number;
  /** A folder that must not be in this tree (device and inode): meeting it throws `refuse(path)`. */
  forbidden?: { dev: bigint; ino: bigint; refuse: (path: string) => Error };
}

export interface WalkCounters {
  entries: number;
  /** Names left out: not valid UTF-8. */
  undecodable: number;
}

export function entryKind(st: fs.BigIntStats | fs.Stats): TreeEntryKind {
  if (st.isFile()) return "file";
  if (st.isDirectory()) return "folder";
  if (st.isSymbolicLink()) return "symlink";
  if (st.isBlockDevice()) return "block-device";
  return "other";
}

export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

interface Listing {
  names: string[];
  /** ssync's work files in the folder. */
  work: Set<string>;
}

interface Walk {
  readonly root: string;
  readonly o: WalkOptions;
  readonly max: number;
  readonly counters: WalkCounters;
}

/** Every entry under `root` (see the module comment); the root must be a readable folder. */
export async function* walkTree(root: string, o: WalkOptions = {}, counters: WalkCounters = { entries: 0, undecodable: 0 }): AsyncGenerator<TreeEntry> {
  const C = fs.constants;
  let rootFd: number;
  try {
    rootFd = fs.openSync(root, C.O_RDONLY | C.O_DIRECTORY);
  } catch (e) {
    throw storageError("read the folder", root, { cause: e });
  }
  try {
    let listing: Listing;
    try {
      listing = listFolder(rootFd, { max: o.maxEntries ?? MAX_TREE_ENTRIES, shown: root });
    } catch (e) {
      throw e instanceof StorageError ? e : storageError("read the folder", root, { cause: e });
    }
    yield* walkFolder(rootFd, listing, { prefix: "", depth: 0 }, { root, o, max: o.maxEntries ?? MAX_TREE_ENTRIES, counters });
  } finally {
    fs.closeSync(rootFd);
  }
}

function entryError(e: unknown, action: string, shown: string): { code: string; message: string } {
  const err = e instanceof StorageError ? e : storageError(action, shown, { cause: e });
  return { code: (err as { code?: string }).code ?? "EIO", message: err.message };
}

async function* walkFolder(fd: number, listing: Listing, at: { prefix: string; depth: number }, w: Walk): AsyncGenerator<TreeEntry> {
  const C = fs.constants;
  for (const name of listing.names) {
    const path = at.prefix === "" ? name : `${at.prefix}/${name}`;
    const shown = nodePath.join(w.root, path);
    if (++w.counters.entries > w.max) {
      throw storageError("read the folder", w.root, {
        code: "E2BIG",
        reason: `it holds more than ${w.max} entries, the most a folder sync lists (sync its subfolders one by one)`,
      });
    }
    if (w.counters.entries % YIELD_EVERY === 0) {
      await yieldToEventLoop();
      w.o.signal?.throwIfAborted();
    }
    const pinned = `/proc/self/fd/${fd}/${name}`;
    let st: fs.BigIntStats;
    try {
      st = fs.lstatSync(pinned, { bigint: true });
    } catch (e) {
      if ((e as { code?: string }).code === "ENOENT") {
        if (name.includes("\uFFFD")) {
          w.counters.undecodable++;
          w.o.note?.(at.prefix, `a name in ${at.prefix === "" ? "the top folder" : `${at.prefix}/`} is not valid UTF-8 (${JSON.stringify(name)}): left out`);
        }
        continue; // else removed meanwhile
      }
      yield { path, kind: "other", size: 0, mtimeNs: 0n, error: entryError(e, "read", shown) };
      continue;
    }
    const kind = entryKind(st);
    const pending = kind === "file" &&
      (listing.work.has(nodePath.basename(workFilePath("", name, "journal"))) || listing.work.has(nodePath.basename(workFilePath("", name, "partial"))));
    const entry: TreeEntry = {
      path,
      kind,
      size: kind === "file" ? Number(st.size) : 0,
      mtimeNs: st.mtimeNs,
      mode: Number(st.mode) & 0o7777,
      uid: Number(st.uid),
      gid: Number(st.gid),
      dev: st.dev,
      ino: st.ino,
      ...(pending ? { pending } : {}),
    };
    if (kind !== "folder") {
      yield entry;
      continue;
    }
    const f = w.o.forbidden;
    if (f !== undefined && f.dev === st.dev && f.ino === st.ino) throw f.refuse(path);
    if (w.o.descend?.(entry) === false) {
      yield entry;
      continue;
    }
    if (at.depth + 1 > MAX_DEPTH) {
      yield { ...entry, error: { code: "ELOOP", message: `Cannot read the folder ${shown}: it is more than ${MAX_DEPTH} folders deep` } };
      continue;
    }
    let child: number | undefined;
    let inner: Listing;
    try {
      child = fs.openSync(pinned, C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW);
      const now = fs.fstatSync(child, { bigint: true });
      if (now.dev !== st.dev || now.ino !== st.ino) {
        throw storageError("read the folder", shown, { code: "EAGAIN", reason: "it was replaced during the walk" });
      }
      inner = listFolder(child, { max: w.max, shown });
    } catch (e) {
      if (child !== undefined) fs.closeSync(child);
      if ((e as { code?: string }).code === "E2BIG") throw e;
      yield { ...entry, error: entryError(e, "read the folder", shown) };
      continue;
    }
    try {
      yield entry;
      yield* walkFolder(child, inner, { prefix: path, depth: at.depth + 1 }, w);
    } finally {
      fs.closeSync(child);
    }
  }
}

/** The names in the folder open as `fd`, sorted, ssync's work files apart. */
function listFolder(fd: number, o: { max: number; shown: string }): Listing {
  const names: string[] = [];
  const work = new Set<string>();
  const dir = fs.opendirSync(`/proc/self/fd/${fd}`);
  try {
    for (let d = dir.readSync(); d !== null; d = dir.readSync()) {
      if (isWorkFileName(d.name)) {
        work.add(d.name);
        continue;
      }
      if (names.length >= o.max) {
        throw storageError("read the folder", o.shown, {
          code: "E2BIG",
          reason: `it holds more than ${o.max} entries, the most a folder sync lists (sync its subfolders one by one)`,
        });
      }
      names.push(d.name);
    }
  } finally {
    dir.closeSync();
  }
  return { names: names.sort(), work };
}
