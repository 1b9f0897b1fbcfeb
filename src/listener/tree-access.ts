/**
 * What a batch's control stream may do to the listener's folders (spec "Batches"): LIST a
 * folder's tree, MKDIR one folder, REMOVE one regular file, RMDIR one empty folder, under the
 * same confinement as open-for-client.ts:
 *
 * 1. A name is a path relative to the root (LIST: "" is the root itself), without NUL, ".",
 *    ".." or empty components, none of them one of ssync's work files; under the key's
 *    `path=` prefix when it has one (LIST too: a restricted key never learns a name outside
 *    it). An export of a folder: NAME/PATH is PATH under that folder (LIST may name the folder
 *    itself, the others may not); an export of a file or block device is refused for all four.
 * 2. MKDIR, REMOVE and RMDIR write: refused (EROFS) for a read-only listener or key.
 * 3. Every folder on the way is opened from a descriptor of the root, one component at a
 *    time, O_NOFOLLOW|O_DIRECTORY through /proc/self/fd/<parent>/<name>: no symbolic link is
 *    followed, and a component swapped meanwhile cannot move the walk out of the root. The
 *    last component is acted on relative to that pinned parent: mkdir(2) and rmdir(2) never
 *    follow a link there; REMOVE lstat()s it, refuses anything but a regular file (a symbolic
 *    link too: it removes files, never links), takes the file's writer lock (EBUSY while a
 *    sync writes it, after waiting the lock wait), refuses a file with an interrupted sync's
 *    journal, and unlinks it only while the name still is the inode it locked.
 * 4. LIST walks depth first, a folder before what it holds, never into a symbolic link (each
 *    subfolder is opened O_NOFOLLOW|O_DIRECTORY from its parent's descriptor: one swapped for
 *    a link, or one that cannot be opened, is listed as "unlisted"), yielding one entry at a time (memory bounded by the depth, at most
 *    MAX_LIST_DEPTH folders open); work files are not listed; more than `maxEntries` entries
 *    is ERROR EFBIG. A name that is not valid UTF-8 cannot be named on the wire: skipped.
 */
import { Buffer } from "node:buffer";
import fs from "node:fs";
import { setImmediate } from "node:timers";
import { MAX_LIST_ENTRIES, MAX_NAME_LENGTH } from "../../protocol/constants.ts";
import type { TreeEntry } from "../../protocol/batch-messages.ts";
import type { EntryKind } from "../../protocol/constants.ts";
import { entryKind } from "../storage/tree-walk.ts";
import { lockFilePath } from "../storage/lock-file.ts";
import { destinationFromFd } from "../storage/open-destination.ts";
import { isWorkFileName, workFilePath } from "../storage/work-files.ts";
import { ErrnoError } from "../util/errors.ts";
import { closeQuietly, exportFolder, type OpenPolicy, refuseKernelFolder, sameFile, underPrefix, walkError } from "./open-for-client.ts";

/** Folders one LIST holds open at once (two descriptors each): deeper trees are refused. */
export const MAX_LIST_DEPTH = 64;

const C = fs.constants;

type Verb = "list" | "create" | "remove";

function refuse(code: string, message: string): ErrnoError {
  return new ErrnoError(code, message);
}

/** "Cannot open X" from the shared walk, as the request's own verb. */
function reworded(e: unknown, verb: Verb): Error {
  const error = e as ErrnoError;
  if (error instanceof ErrnoError && error.message.startsWith("Cannot open ")) {
    return new ErrnoError(error.code, `Cannot ${verb} ${error.message.slice("Cannot open ".length)}`);
  }
  return error as Error;
}

/**
 * The checked components of `name` (rules 1 and 2), relative to where the walk starts: the root,
 * or a folder export when the name's first component is one (then [] is that folder itself,
 * which only LIST may name); [] for LIST's root.
 */
function components(name: string, policy: OpenPolicy, o: { verb: Verb; writes: boolean }): { base: string; parts: string[] } {
  const shown = name === "" ? "the root" : name;
  const folder = exportFolder(name, policy);
  if (folder === undefined && policy.exports.has(name)) {
    throw refuse("EACCES", `Cannot ${o.verb} ${name}: it is an export of a file or block device, not a folder`);
  }
  if (folder?.rest === "" && o.verb !== "list") throw refuse("EACCES", `Cannot ${o.verb} ${name}: it is an exported folder (the listener's admin made it)`);
  if (Buffer.byteLength(name) > MAX_NAME_LENGTH) throw refuse("EINVAL", `Cannot ${o.verb} a path that long`);
  if (name.includes("\0")) throw refuse("EINVAL", `Cannot ${o.verb} a path containing NUL`);
  if (name.startsWith("/")) throw refuse("EACCES", `Cannot ${o.verb} ${name}: absolute paths are refused; name a path relative to the listener's root`);
  const parts = name === "" ? [] : name.split("/");
  for (const part of parts) {
    if (part === "..") throw refuse("EACCES", `Cannot ${o.verb} ${name}: ".." components are refused`);
    if (part === "" || part === ".") throw refuse("EINVAL", `Cannot ${o.verb} ${name}: empty and "." components are refused`);
    if (isWorkFileName(part)) throw refuse("EACCES", `Cannot ${o.verb} ${name}: ${part} is one of ssync's own files (a journal, partial or lock file)`);
  }
  if (policy.pathPrefix !== null && !underPrefix(parts, policy.pathPrefix)) {
    throw refuse("EACCES", `Cannot ${o.verb} ${shown}: your key may only reach paths under ${policy.pathPrefix}`);
  }
  if (o.writes && policy.listenerReadOnly) throw refuse("EROFS", `Cannot ${o.verb} ${shown}: the listener is read-only`);
  if (o.writes && policy.keyReadOnly) throw refuse("EROFS", `Cannot ${o.verb} ${shown}: your key is read-only on this listener`);
  return folder ? { base: folder.base, parts: parts.slice(1) } : { base: policy.root, parts };
}

/** Descriptors of `base` (the root or a folder export) and of each folder of `parts`, opened without following links (rule 3). */
function walk(base: string, parts: string[], o: { name: string; verb: Verb }): number[] {
  const dirs: number[] = [];
  try {
    try {
      dirs.push(fs.openSync(base, C.O_RDONLY | C.O_DIRECTORY));
    } catch (e) {
      throw refuse("EIO", `Cannot open the listener's root or exported folder: ${(e as Error).message}`);
    }
    for (const part of parts) {
      const at = `/proc/self/fd/${dirs[dirs.length - 1]}/${part}`;
      try {
        dirs.push(fs.openSync(at, C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW));
      } catch (e) {
        throw reworded(walkError(e, o.name, part, at), o.verb);
      }
    }
    return dirs;
  } catch (e) {
    for (const fd of dirs) closeQuietly(fd);
    throw e;
  }
}

/** Directory reads between two turns of the event loop in listTree. */
const LIST_YIELD_EVERY = 256;

/** LIST (rule 4): the tree under `name`, entries named relative to it. */
export async function* listTree(
  name: string,
  policy: OpenPolicy,
  o: { maxEntries?: number; signal?: AbortSignal } = {},
): AsyncGenerator<TreeEntry> {
  const maxEntries = o.maxEntries ?? MAX_LIST_ENTRIES;
  const shown = name === "" ? "the root" : name;
  const { base, parts } = components(name, policy, { verb: "list", writes: false });
  const dirs = walk(base, parts, { name, verb: "list" });
  const top = dirs.pop()!;
  for (const fd of dirs) closeQuietly(fd);
  const stack: { fd: number; dir: fs.Dir; prefix: string }[] = [];
  try {
    stack.push({ fd: top, dir: fs.opendirSync(`/proc/self/fd/${top}`), prefix: "" });
  } catch (e) {
    closeQuietly(top);
    throw refuse("EIO", `Cannot list ${shown}: ${(e as Error).message}`);
  }
  let count = 0;
  let reads = 0;
  try {
    while (stack.length > 0) {
      if (o.signal?.aborted) throw o.signal.reason;
      // The sync Dir API (Deno's async fs.Dir leaks its descriptor when closed before the end):
      // one LIST of a huge folder still gives the event loop back every LIST_YIELD_EVERY reads.
      if (++reads % LIST_YIELD_EVERY === 0) await new Promise<void>((resolve) => setImmediate(resolve));
      const level = stack[stack.length - 1];
      const entry = level.dir.readSync();
      if (entry === null) {
        stack.pop();
        try { level.dir.closeSync(); } catch { /* closed */ }
        closeQuietly(level.fd);
        continue;
      }
      if (isWorkFileName(entry.name)) continue;
      const at = `/proc/self/fd/${level.fd}/${entry.name}`;
      let st: fs.BigIntStats;
      const rel = level.prefix + entry.name;
      try {
        st = fs.lstatSync(at, { bigint: true });
      } catch (e) {
        if ((e as { code?: string }).code === "ENOENT") continue; // gone meanwhile, or a name that is not valid UTF-8 (rule 4)
        // There but unreadable (a folder readable, not searchable): never taken for absent.
        if (++count > maxEntries) throw refuse("EFBIG", `Cannot list ${shown}: it holds more than ${maxEntries} entries`);
        yield { kind: "unlisted", size: 0, mtimeNs: 0n, name: rel };
        continue;
      }
      if (Buffer.byteLength(rel) > MAX_NAME_LENGTH) throw refuse("EINVAL", `Cannot list ${shown}: ${rel.slice(0, 64)}… is longer than ${MAX_NAME_LENGTH} bytes`);
      if (++count > maxEntries) throw refuse("EFBIG", `Cannot list ${shown}: it holds more than ${maxEntries} entries`);
      const kind: EntryKind = entryKind(st);
      if (kind !== "folder") {
        yield { kind, size: kind === "file" ? Number(st.size) : 0, mtimeNs: st.mtimeNs, name: rel };
        continue;
      }
      if (stack.length >= MAX_LIST_DEPTH) throw refuse("EINVAL", `Cannot list ${shown}: ${rel} is more than ${MAX_LIST_DEPTH} folders deep`);
      // A folder that cannot be walked (unreadable, or swapped for a link since lstat) is
      // "unlisted": never taken for an empty one, so nothing below it is deleted anywhere.
      let fd: number | undefined;
      let dir: fs.Dir | undefined;
      try {
        fd = fs.openSync(at, C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW);
        dir = fs.opendirSync(`/proc/self/fd/${fd}`);
      } catch {
        if (fd !== undefined) closeQuietly(fd);
        yield { kind: "unlisted", size: 0, mtimeNs: st.mtimeNs, name: rel };
        continue;
      }
      stack.push({ fd, dir, prefix: rel + "/" });
      yield { kind, size: 0, mtimeNs: st.mtimeNs, name: rel };
    }
  } finally {
    for (const level of stack) {
      try { level.dir.closeSync(); } catch { /* closed */ }
      closeQuietly(level.fd);
    }
  }
}

/** MKDIR: one folder in an existing parent; an existing folder (not a link) is success. */
export function makeFolder(name: string, policy: OpenPolicy): void {
  const { base, parts } = components(name, policy, { verb: "create", writes: true });
  const dirs = walk(base, parts.slice(0, -1), { name, verb: "create" });
  try {
    const parent = dirs[dirs.length - 1];
    const base = parts[parts.length - 1];
    const at = `/proc/self/fd/${parent}/${base}`;
    refuseKernelFolder({ name }, parent);
    try {
      fs.mkdirSync(at, { mode: 0o777 }); // the listener's umask decides who else may enter
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code !== "EEXIST") throw reworded(walkError(e, name, base, at), "create");
      const st = fs.lstatSync(at);
      if (st.isDirectory()) return;
      if (st.isSymbolicLink()) throw refuse("EACCES", `Cannot create ${name}: ${base} is a symbolic link, which the listener does not follow`);
      throw refuse("EEXIST", `Cannot create ${name}: it exists and is not a folder`);
    }
  } finally {
    for (const fd of dirs) closeQuietly(fd);
  }
}

/** RMDIR: one empty folder (never a link, never the root). */
export function removeFolder(name: string, policy: OpenPolicy): void {
  const { base, parts } = components(name, policy, { verb: "remove", writes: true });
  const dirs = walk(base, parts.slice(0, -1), { name, verb: "remove" });
  try {
    const base = parts[parts.length - 1];
    const at = `/proc/self/fd/${dirs[dirs.length - 1]}/${base}`;
    const st = lstatOrRefuse(at, name, base);
    if (!st.isDirectory()) {
      throw refuse(st.isSymbolicLink() ? "EACCES" : "EINVAL", `Cannot remove ${name}: ${st.isSymbolicLink() ? "a symbolic link" : "not a folder"}; RMDIR removes only empty folders`);
    }
    try {
      fs.rmdirSync(at);
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === "ENOTEMPTY" || code === "EEXIST") throw refuse("EEXIST", `Cannot remove ${name}: the folder is not empty`);
      throw reworded(walkError(e, name, base, at), "remove");
    }
  } finally {
    for (const fd of dirs) closeQuietly(fd);
  }
}

/** REMOVE: one regular file, under its writer lock, never through or at a link (rule 3). */
export async function removeFile(name: string, policy: OpenPolicy): Promise<void> {
  const { base, parts } = components(name, policy, { verb: "remove", writes: true });
  const dirs = walk(base, parts.slice(0, -1), { name, verb: "remove" });
  try {
    const base = parts[parts.length - 1];
    const parentAt = `/proc/self/fd/${dirs[dirs.length - 1]}`;
    const at = `${parentAt}/${base}`;
    const st = lstatOrRefuse(at, name, base);
    if (st.isSymbolicLink()) throw refuse("EACCES", `Cannot remove ${name}: it is a symbolic link; REMOVE removes only regular files`);
    if (st.isDirectory()) throw refuse("EISDIR", `Cannot remove ${name}: it is a folder (RMDIR removes an empty one)`);
    if (!st.isFile()) throw refuse("EINVAL", `Cannot remove ${name}: not a regular file`);
    if (fs.existsSync(workFilePath(parentAt, base, "journal"))) {
      throw refuse("EBUSY", `Cannot remove ${name}: it has the journal of an interrupted sync; sync it again first`);
    }
    let fd: number;
    try {
      fd = fs.openSync(at, C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK);
    } catch (e) {
      throw reworded(walkError(e, name, base, at), "remove");
    }
    const opened = fs.fstatSync(fd, { bigint: true });
    if (!opened.isFile() || opened.ino !== st.ino || opened.dev !== st.dev) {
      closeQuietly(fd);
      throw refuse("EAGAIN", `Cannot remove ${name}: it was replaced meanwhile; try again`);
    }
    let store;
    try {
      store = await destinationFromFd({ fd, kind: "file", stat: opened }, {
        path: name,
        readOnly: false,
        lockFile: lockFilePath(at),
        lockWaitMs: policy.lockWaitMs ?? 0,
      });
    } catch (e) {
      const error = e as ErrnoError;
      if (error.code === "EBUSY") throw refuse("EBUSY", `Cannot remove ${name}: another ssync is writing it`);
      throw e;
    }
    try {
      if (!sameFile(at, opened)) throw refuse("EAGAIN", `Cannot remove ${name}: it was replaced meanwhile; try again`);
      fs.unlinkSync(at);
    } finally {
      await store[Symbol.asyncDispose]();
    }
  } finally {
    for (const fd of dirs) closeQuietly(fd);
  }
}

function lstatOrRefuse(at: string, name: string, base: string): fs.BigIntStats {
  try {
    return fs.lstatSync(at, { bigint: true });
  } catch (e) {
    throw reworded(walkError(e, name, base, at), "remove");
  }
}
