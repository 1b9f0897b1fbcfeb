/**
 * A folder sync's changes to the destination tree other than file contents: folders made,
 * entries removed, each through descriptors pinned from the root down, never through a link.
 *
 * 1. The folders leading to the entry are opened one by one from the root, O_DIRECTORY |
 *    O_NOFOLLOW through /proc/self/fd/<parent>/<name>: a component that is a symbolic link
 *    (or anything but a folder) is refused, never entered, even if it was swapped in after
 *    the destination was listed;
 * 2. the entry is made or removed by its name in the pinned parent: mkdir; unlink (of the
 *    entry itself: a link is removed, never followed); rmdir (an empty folder only, never
 *    recursive).
 *
 * Invariants: nothing outside `root` is ever made or removed; a removal is done only when the
 * entry is still of the kind the plan saw (else refused: changed since listed), a file only
 * when no journal lies beside it; made folders get the source folder's rwx bits masked by the
 * umask (mkdir's own rule), plus u+rwx so that ssync can fill them.
 */
import fs from "node:fs";
import nodePath from "node:path";
import type { SignatureCache } from "./signature-cache.ts";
import { storageError } from "./storage-error.ts";
import type { TreeEntryKind } from "./tree-entry.ts";
import { entryKind } from "./tree-walk.ts";
import { isWorkFileName, workFilePath } from "./work-files.ts";

const C = fs.constants;

/** The folder `root/parts…` opened (the caller closes it), refused when a component is a link or no folder. */
function openFolders(root: string, parts: readonly string[], o: { action: string; shown: string }): number {
  let fd: number;
  try {
    fd = fs.openSync(root, C.O_RDONLY | C.O_DIRECTORY);
  } catch (e) {
    throw storageError(o.action, o.shown, { cause: e });
  }
  for (const part of parts) {
    const at = `/proc/self/fd/${fd}/${part}`;
    let next: number;
    try {
      next = fs.openSync(at, C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW);
    } catch (e) {
      const symlink = isSymlink(at);
      fs.closeSync(fd);
      const code = (e as { code?: string }).code;
      if (symlink || code === "ELOOP") {
        throw storageError(o.action, o.shown, { code: "ELOOP", reason: `${part} is a symbolic link, which a folder sync never follows` });
      }
      if (code === "ENOTDIR") throw storageError(o.action, o.shown, { code: "ENOTDIR", reason: `${part} is not a folder` });
      throw storageError(o.action, o.shown, { cause: e });
    }
    fs.closeSync(fd);
    fd = next;
  }
  return fd;
}

function isSymlink(at: string): boolean {
  try {
    return fs.lstatSync(at).isSymbolicLink();
  } catch {
    return false;
  }
}

function split(path: string): { parents: string[]; name: string } {
  const parts = path.split("/");
  return { parents: parts.slice(0, -1), name: parts[parts.length - 1] };
}

/** Makes the folder `root/path` (its parent must be there); a folder already there is fine, anything else is refused. */
export function makeFolderUnder(root: string, path: string, o: { mode: number }): void {
  const shown = nodePath.join(root, path);
  const { parents, name } = split(path);
  // Never a folder where ssync keeps its own files: it would block syncs of the file.
  if ([...parents, name].some(isWorkFileName)) throw storageError("create the folder", shown, { code: "EINVAL", reason: "the name is one of ssync's work files" });
  const parent = openFolders(root, parents, { action: "create the folder", shown });
  try {
    const at = `/proc/self/fd/${parent}/${name}`;
    try {
      fs.mkdirSync(at, { mode: (o.mode & 0o777) | 0o700 });
      return;
    } catch (e) {
      if ((e as { code?: string }).code !== "EEXIST") throw storageError("create the folder", shown, { cause: e });
    }
    const st = fs.lstatSync(at);
    if (st.isDirectory()) return;
    throw storageError("create the folder", shown, {
      code: st.isSymbolicLink() ? "ELOOP" : "ENOTDIR",
      reason: st.isSymbolicLink() ? "a symbolic link is in the way (never followed)" : "something that is not a folder is in the way",
    });
  } finally {
    fs.closeSync(parent);
  }
}

export type RemoveOutcome = { removed: true } | { removed: false; note: string };

/**
 * Removes the entry `root/path` the plan saw as `kind` (a folder: rmdir, only if empty).
 * Kept, with a note, when it holds something (a folder) or has a journal beside it (a file);
 * throws when it cannot be removed or is no longer of that kind. A file removed drops its entry
 * in `cache` (a pull's signature cache), so entries never outlive their files.
 */
export function removeUnder(root: string, path: string, kind: TreeEntryKind, o: { cache?: SignatureCache } = {}): RemoveOutcome {
  const shown = nodePath.join(root, path);
  const { parents, name } = split(path);
  const parent = openFolders(root, parents, { action: "remove", shown });
  try {
    const at = `/proc/self/fd/${parent}/${name}`;
    let st: fs.Stats;
    try {
      st = fs.lstatSync(at);
    } catch (e) {
      if ((e as { code?: string }).code === "ENOENT") return { removed: true }; // gone meanwhile
      throw storageError("remove", shown, { cause: e });
    }
    if (entryKind(st) !== kind) {
      throw storageError("remove", shown, { code: "EAGAIN", reason: `it was a ${kind} when listed and is a ${entryKind(st)} now: kept` });
    }
    if (kind === "folder") {
      try {
        fs.rmdirSync(at);
      } catch (e) {
        const code = (e as { code?: string }).code;
        if (code === "ENOTEMPTY" || code === "EEXIST") return { removed: false, note: "folder kept: it still holds entries (not listed, excluded, or ssync's work files)" };
        throw storageError("remove", shown, { cause: e });
      }
      return { removed: true };
    }
    if (kind === "file" && exists(workFilePath(`/proc/self/fd/${parent}`, name, "journal"))) {
      return { removed: false, note: "kept: a sync into it is running or was interrupted (its journal is beside it; see ssync recover)" };
    }
    try {
      fs.unlinkSync(at);
    } catch (e) {
      throw storageError("remove", shown, { cause: e });
    }
    // Its signature cache entry goes with it, keyed as a pull keys it: the folder resolved, the name as is.
    if (o.cache) o.cache.drop(nodePath.join(fs.readlinkSync(`/proc/self/fd/${parent}`), name));
    return { removed: true };
  } finally {
    fs.closeSync(parent);
  }
}

function exists(path: string): boolean {
  try {
    fs.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}
