/**
 * The destination's folders in a folder sync: made where missing, never through a link.
 *
 * Invariant: each component below the root is lstat'ed: a symbolic link or anything else that
 * is not a folder is refused ("not followed"), never entered. Made folders get the source
 * folder's rwx bits masked by the umask (mkdir's own rule), plus u+rwx so that ssync can
 * fill them. The destination tree is trusted not to be changed by someone else during the
 * sync (as with rsync); a listener's path confinement is the network part's.
 */
import fs from "node:fs";
import nodePath from "node:path";
import { storageError } from "./storage-error.ts";

/** Makes `root/path` (each missing folder along it) unless it is there; throws when a component is no folder. */
export function ensureFolder(root: string, path: string, o: { mode: number }): void {
  let at = root;
  for (const name of path.split("/")) {
    at = nodePath.join(at, name);
    let st: fs.Stats | undefined;
    try {
      st = fs.lstatSync(at);
    } catch (e) {
      if ((e as { code?: string }).code !== "ENOENT") throw storageError("create the folder", at, { cause: e });
    }
    if (st === undefined) {
      try {
        fs.mkdirSync(at, { mode: (o.mode & 0o777) | 0o700 });
      } catch (e) {
        if ((e as { code?: string }).code !== "EEXIST") throw storageError("create the folder", at, { cause: e });
        st = fs.lstatSync(at);
      }
    }
    if (st === undefined || st.isDirectory()) continue;
    throw storageError("create the folder", at, {
      code: st.isSymbolicLink() ? "ELOOP" : "ENOTDIR",
      reason: st.isSymbolicLink() ? "a symbolic link is in the way (never followed)" : "something that is not a folder is in the way",
    });
  }
}

/** Whether `root/path` is a folder (no component below root a link; "" is root itself), without making anything. */
export function folderExists(root: string, path: string): boolean {
  let at = root;
  try {
    if (!fs.statSync(root).isDirectory()) return false;
  } catch {
    return false;
  }
  for (const name of path === "" ? [] : path.split("/")) {
    at = nodePath.join(at, name);
    try {
      if (!fs.lstatSync(at).isDirectory()) return false;
    } catch {
      return false;
    }
  }
  return true;
}
