/**
 * What a listener lets a client open: a named export, or a path under its root.
 *
 * 1. An export name is matched exactly, before any path rule; it opens the configured path.
 *    An export of a folder (spec "Batches", folder exports) is no file: NAME/PATH names PATH under that folder,
 *    under every rule below with the folder in place of the root (exportFolder()).
 * 2. A client path must be relative, non-empty, without NUL, ".", ".." or empty components,
 *    and under the key's path prefix when it has one.
 * 3. Writes (a push that is not a dry run) are refused when the listener or the key is
 *    read-only.
 * 4. The path is walked one component at a time from a descriptor of the root, each
 *    directory opened with O_NOFOLLOW|O_DIRECTORY through /proc/self/fd/<parent>/<name>, so
 *    no symbolic link is ever followed and a component swapped during the walk cannot move
 *    the walk outside the root. The last component is opened O_NOFOLLOW|O_NONBLOCK (or
 *    created O_CREAT|O_EXCL, which never follows links, never in a kernel filesystem such
 *    as /dev or /proc) and checked to be a regular file.
 *    A file with more than one hard link is never written (its other name may be outside).
 * 5. Storage adopts that very descriptor (a writer's is reopened O_RDWR relative to the
 *    pinned parent and must be the same inode): nothing is opened by name afterwards, and
 *    the engine's workers read through the descriptor, so a name swapped under the root
 *    after the check changes nothing the session touches. Only a writer locks the file; a
 *    dry run takes no lock (storage/open-destination.ts), so it never holds a writer out,
 *    and "busy" always means a writer holds it.
 *
 * Every refusal is an Error with an errno-style `code` (EACCES, EROFS, ENOENT, EBUSY,
 * EINVAL) and a message naming the client's path, which the session sends back as ERROR.
 */
import { Buffer } from "node:buffer";
import fs from "node:fs";
import { MAX_NAME_LENGTH } from "../../protocol/constants.ts";
import { EmptyStorage } from "../storage/empty-storage.ts";
import { kernelFilesystemOf } from "../storage/kernel-filesystem.ts";
import { lockFilePath } from "../storage/lock-file.ts";
import { destinationFromFd, journaledDestination, openDestination, partialDestination } from "../storage/open-destination.ts";
import { checkReadable } from "../storage/recover-journal.ts";
import { foreignWorkFile, isWorkFileName, workFilePath } from "../storage/work-files.ts";
import { openSource, sourceFromFd } from "../storage/open-source.ts";
import type { Storage } from "../storage/storage.ts";
import { asError, ErrnoError } from "../util/errors.ts";

export interface OpenPolicy {
  /** The root folder (resolved once, at start). */
  root: string;
  /** Export name → path of a file or block device. */
  exports: ReadonlyMap<string, string>;
  /** The listener was started with --read-only. */
  listenerReadOnly: boolean;
  /** The client's key is read-only. */
  keyReadOnly: boolean;
  /** The client's key may only open paths under this prefix; null = anywhere. */
  pathPrefix: string | null;
  /** Block-device exports' journals (the listener's state folder). */
  journalDir?: string;
  /** How long an open waits for a lock held by a session that is ending (ms). */
  lockWaitMs?: number;
  /** Told what recovery did with a journal an interrupted sync left. */
  log?: (message: string) => void;
}

export interface ClientOpen {
  name: string;
  mode: "push" | "pull";
  dryRun: boolean;
  /** The client asked for in-place writes (no journal, no partial file). */
  inplace?: boolean;
}

const C = fs.constants;

function refuse(code: string, message: string): ErrnoError {
  return new ErrnoError(code, message);
}

/** The components of a client path, or a refusal saying why it is not acceptable. */
export function clientPathComponents(name: string): string[] {
  if (name === "") throw refuse("EINVAL", "Cannot open an empty path");
  if (Buffer.byteLength(name) > MAX_NAME_LENGTH) throw refuse("EINVAL", "Cannot open a path that long");
  if (name.includes("\0")) throw refuse("EINVAL", "Cannot open a path containing NUL");
  if (name.startsWith("/")) throw refuse("EACCES", `Cannot open ${name}: absolute paths are refused; name a path relative to the listener's root`);
  const parts = name.split("/");
  for (const part of parts) {
    if (part === "..") throw refuse("EACCES", `Cannot open ${name}: ".." components are refused`);
    if (part === "" || part === ".") throw refuse("EINVAL", `Cannot open ${name}: empty and "." components are refused`);
    if (isWorkFileName(part)) throw refuse("EACCES", `Cannot open ${name}: ${part} is one of ssync's own files (a journal, partial or lock file)`);
  }
  return parts;
}

/** True when the path's components lie under the key's prefix (the prefix itself included). */
export function underPrefix(parts: string[], prefix: string): boolean {
  const want = prefix.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.length < want.length) return false;
  if (want.length === 0) return true;
  const last = want.length - 1;
  for (let i = 0; i < last; i++) if (parts[i] !== want[i]) return false;
  // "vm" allows "vm/x" and "vm" itself; "vm/" behaves the same.
  return parts[last] === want[last];
}

/**
 * The folder export a name lies in: NAME/PATH with NAME exported as a folder → the folder
 * (resolved, as the admin named it: links in its own path are the admin's) and PATH. The
 * export's name itself is the folder, not a file in it (`rest` empty).
 */
export function exportFolder(name: string, policy: Pick<OpenPolicy, "exports">): { base: string; rest: string } | undefined {
  const slash = name.indexOf("/");
  const head = slash < 0 ? name : name.slice(0, slash);
  const target = policy.exports.get(head);
  if (target === undefined) return undefined;
  try {
    if (!fs.statSync(target).isDirectory()) return undefined;
    return { base: fs.realpathSync(target), rest: slash < 0 ? "" : name.slice(slash + 1) };
  } catch {
    return undefined;
  }
}

function checkWrite(req: ClientOpen, policy: OpenPolicy): void {
  if (req.mode !== "push" || req.dryRun) return;
  if (policy.listenerReadOnly) throw refuse("EROFS", `Cannot write ${req.name}: the listener is read-only`);
  if (policy.keyReadOnly) throw refuse("EROFS", `Cannot write ${req.name}: your key is read-only on this listener`);
}

/** Storage errors name the path storage was given; show the client's name instead. */
function renamed(e: unknown, from: string, name: string): Error {
  const error = asError(e);
  const code = (error as { code?: string }).code;
  if (code === "EBUSY") {
    // "Cannot lock <path>: another ssync (…) is writing it; waited 2 s": keep what follows the path.
    const at = error.message.indexOf(": ");
    const reason = at >= 0 ? error.message.slice(at + 2) : "another ssync is writing it";
    return refuse("EBUSY", `Cannot write ${name}: it is busy, ${reason}`);
  }
  if (from !== "" && error.message.includes(from)) {
    return code ? refuse(code, error.message.split(from).join(name)) : new Error(error.message.split(from).join(name));
  }
  return error;
}

export function closeQuietly(fd: number | undefined): void {
  if (fd === undefined) return;
  try {
    fs.closeSync(fd);
  } catch {
    // already closed
  }
}

function isSymlink(at: string): boolean {
  try {
    return fs.lstatSync(at).isSymbolicLink();
  } catch {
    return false;
  }
}

/** A failed step of the walk from the root, as the refusal the client reads. */
export function walkError(e: unknown, name: string, part: string, at: string): Error {
  const code = (e as { code?: string }).code;
  if (code === "ELOOP" || isSymlink(at)) return refuse("EACCES", `Cannot open ${name}: ${part} is a symbolic link, which the listener does not follow`);
  if (code === "ENOTDIR") return refuse("ENOENT", `Cannot open ${name}: ${part} is not a directory`);
  if (code === "ENOENT") return refuse("ENOENT", `Cannot open ${name}: ${part} does not exist`);
  if (code === "EACCES") return refuse("EACCES", `Cannot open ${name}: permission denied`);
  return refuse("EIO", `Cannot open ${name}: ${(e as Error).message}`);
}

/** Opens what the client asked for, enforcing the policy; see the numbered steps above. */
export async function openForClient(req: ClientOpen, policy: OpenPolicy): Promise<Storage> {
  const folder = exportFolder(req.name, policy);
  if (folder?.rest === "") throw refuse("EISDIR", `Cannot open ${req.name}: it is an exported folder, not a file; name a file in it (${req.name}/FILE)`);
  const exported = folder ? undefined : policy.exports.get(req.name);
  if (exported !== undefined) {
    if (policy.pathPrefix !== null && !underPrefix(req.name.split("/"), policy.pathPrefix)) {
      throw refuse("EACCES", `Cannot open ${req.name}: your key may only open paths under ${policy.pathPrefix}`);
    }
    checkWrite(req, policy);
    const common = { lockWaitMs: policy.lockWaitMs, journalDir: policy.journalDir };
    try {
      return req.mode === "pull"
        ? await openSource(exported, common)
        : await openDestination(exported, { ...common, create: false, readOnly: req.dryRun, inplace: req.inplace, log: policy.log });
    } catch (e) {
      throw renamed(e, exported, req.name);
    }
  }
  const whole = clientPathComponents(req.name);
  if (policy.pathPrefix !== null && !underPrefix(whole, policy.pathPrefix)) {
    throw refuse("EACCES", `Cannot open ${req.name}: your key may only open paths under ${policy.pathPrefix}`);
  }
  checkWrite(req, policy);
  // The walk starts at the root, or at a folder export (its name is the first component).
  const start = folder?.base ?? policy.root;
  const parts = folder ? whole.slice(1) : whole;

  const dirs: number[] = [];
  let file: number | undefined;
  try {
    try {
      dirs.push(fs.openSync(start, C.O_RDONLY | C.O_DIRECTORY));
    } catch (e) {
      throw refuse("EIO", `Cannot open ${folder ? "the exported folder" : "the listener's root"}: ${(e as Error).message}`);
    }
    for (const part of parts.slice(0, -1)) {
      const at = `/proc/self/fd/${dirs[dirs.length - 1]}/${part}`;
      try {
        dirs.push(fs.openSync(at, C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW));
      } catch (e) {
        throw walkError(e, req.name, part, at);
      }
    }
    const base = parts[parts.length - 1];
    const parent = `/proc/self/fd/${dirs[dirs.length - 1]}`;
    const at = `${parent}/${base}`;
    const writes = req.mode === "push" && !req.dryRun;
    const waitMs = policy.lockWaitMs ?? 0;
    /** This open made the file (in place): the store removes it if the session writes nothing. */
    let created = false;
    try {
      file = fs.openSync(at, C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK);
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code !== "ENOENT") throw walkError(e, req.name, base, at);
      if (req.mode === "pull") throw refuse("ENOENT", `Cannot open ${req.name}: no such file`);
      if (req.dryRun) {
        // A dry run creates nothing; a missing file reads as empty. The name is not looked up
        // again: a symbolic link put there meanwhile would be followed out of the root.
        return new EmptyStorage(req.name);
      }
      refuseKernelFolder(req, dirs[dirs.length - 1]);
      if (!req.inplace) return await openPartial(req, { parent, base, at, dirs, waitMs });
      try {
        file = fs.openSync(at, C.O_RDWR | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
        created = true;
      } catch (e2) {
        if ((e2 as { code?: string }).code !== "EEXIST") throw walkError(e2, req.name, base, at);
        // Another writer created it meanwhile: open it like any existing file.
        try {
          file = fs.openSync(at, C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK);
        } catch (e3) {
          throw walkError(e3, req.name, base, at);
        }
      }
    }
    const st = checkRegular(file, req, { writes, root: start });
    const journalPath = workFilePath(parent, base, "journal");
    if (!writes) {
      // A reader never sees a half-applied commit (recover-journal.ts checkReadable).
      await checkReadable(req.name, { journalPath, waitMs });
    }
    if (req.mode === "pull") {
      const fd = file;
      file = undefined;
      return sourceFromFd({ fd, kind: "file", stat: st }, { path: req.name });
    }
    if (writes) file = reopenForWriting(file, { at, name: req.name, base, stat: st });
    // Without flock the portable lock file sits beside the file, made through the pinned
    // parent directory, which stays open until the store is released.
    const dir = dirs.pop()!;
    const fd = file;
    file = undefined;
    const dest = await lockedStore(fd, st, {
      name: req.name,
      readOnly: !writes,
      lockFile: lockFilePath(`/proc/self/fd/${dir}/${base}`),
      waitMs,
      journalPath,
      dir,
      createdAt: created ? `/proc/self/fd/${dir}/${base}` : undefined,
    });
    if (!writes) return dest;
    if (!sameFile(at, st)) {
      await dest[Symbol.asyncDispose]();
      throw refuse("EAGAIN", `Cannot open ${req.name}: it was replaced while opening; try again`);
    }
    return await journaledDestination(dest, {
      stat: st,
      journalPath,
      journalDir: parent,
      makeJournalDir: false,
      inplace: req.inplace === true,
      log: policy.log,
    });
  } finally {
    closeQuietly(file);
    for (const fd of dirs) closeQuietly(fd);
  }
}

/**
 * The admin chose the root, yet a folder under it on a kernel filesystem (a mount of /dev or
 * /proc) never gets a new file: a missing name there is a device or entry that does not exist.
 */
export function refuseKernelFolder(req: { name: string }, dir: number): void {
  const k = kernelFilesystemOf(fs.fstatSync(dir, { bigint: true }).dev);
  if (k) {
    throw refuse("EACCES", `Cannot create ${req.name}: its folder is on ${k.mountPoint} (${k.type}), a kernel filesystem, where the listener never creates a file`);
  }
}

/**
 * Storage over the checked descriptor, locked (a writer) and owning the pinned parent `dir`,
 * which it closes when released (also when locking fails).
 */
async function lockedStore(
  fd: number,
  st: fs.BigIntStats,
  o: { name: string; readOnly: boolean; lockFile: string; waitMs: number; journalPath?: string; dir: number; createdAt?: string },
) {
  try {
    return await destinationFromFd({ fd, kind: "file", stat: st }, {
      path: o.name,
      readOnly: o.readOnly,
      lockFile: o.lockFile,
      lockWaitMs: o.waitMs,
      journalPath: o.journalPath,
      createdAt: o.createdAt,
      onRelease: () => closeQuietly(o.dir),
    });
  } catch (e) {
    throw renamed(e, o.name, o.name);
  }
}

/** `at` still names the file `stat` describes. */
export function sameFile(at: string, stat: fs.BigIntStats): boolean {
  try {
    const now = fs.lstatSync(at, { bigint: true });
    return now.dev === stat.dev && now.ino === stat.ino;
  } catch {
    return false;
  }
}

/** fstat of the opened file: a regular file, singly linked when written, inside the root. */
function checkRegular(file: number, req: ClientOpen, o: { writes: boolean; root: string }): fs.BigIntStats {
  const st = fs.fstatSync(file, { bigint: true });
  if (st.isBlockDevice()) {
    throw refuse("EACCES", `Cannot open ${req.name}: block devices are served only as named exports (ssync listen --export NAME=DEVICE)`);
  }
  if (!st.isFile()) {
    throw refuse(st.isDirectory() ? "EISDIR" : "EINVAL", `Cannot open ${req.name}: not a regular file`);
  }
  if (st.nlink > 1n && o.writes) {
    // Another name of this inode may lie outside the root: writing would change it there.
    throw refuse("EACCES", `Cannot write ${req.name}: it has ${st.nlink} hard links, and the listener does not write files linked from elsewhere`);
  }
  const real = fs.realpathSync(`/proc/self/fd/${file}`);
  if (real !== o.root && !real.startsWith(o.root.endsWith("/") ? o.root : o.root + "/")) {
    throw refuse("EACCES", `Cannot open ${req.name}: it is outside the listener's root`);
  }
  return st;
}

/**
 * A new file: its partial file beside it (created, or an interrupted sync's resumed), opened
 * through the pinned parent like the file itself, locked, and renamed over the name at
 * commit (storage/partial-storage.ts). Takes the parent's descriptor out of `o.dirs`.
 */
async function openPartial(
  req: ClientOpen,
  o: { parent: string; base: string; at: string; dirs: number[]; waitMs: number },
): Promise<Storage> {
  const partialAt = workFilePath(o.parent, o.base, "partial");
  const shown = `.${o.base}.ssync-partial`;
  let created = true;
  let file: number | undefined;
  try {
    try {
      // Off the event loop: creating a file waits for the filesystem's journal, which other
      // files' commits (fsync) keep busy — ~1 ms per new file, measured, the listener's
      // largest single cost in a batch of small files.
      file = await openOffThread(partialAt, C.O_RDWR | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
    } catch (e) {
      if ((e as { code?: string }).code !== "EEXIST") throw walkError(e, req.name, shown, partialAt);
      created = false;
      file = fs.openSync(partialAt, C.O_RDWR | C.O_NOFOLLOW | C.O_NONBLOCK);
    }
    const st = fs.fstatSync(file, { bigint: true });
    const foreign = foreignWorkFile(st);
    if (foreign) throw refuse("EACCES", `Cannot write ${req.name}: its partial file ${shown} is not ssync's (${foreign})`);
    const dir = o.dirs.pop()!;
    const fd = file;
    file = undefined;
    const dest = await lockedStore(fd, st, { name: req.name, readOnly: false, lockFile: lockFilePath(partialAt), waitMs: o.waitMs, dir });
    let nameTaken = true;
    try {
      fs.lstatSync(o.at);
    } catch {
      nameTaken = false;
    }
    if (!sameFile(partialAt, st) || nameTaken) {
      await dest[Symbol.asyncDispose]();
      throw refuse("EAGAIN", `Cannot open ${req.name}: another sync created it meanwhile; try again`);
    }
    return partialDestination(dest, { stat: st, partialPath: partialAt, finalPath: o.at, created, dir: `/proc/self/fd/${dir}` });
  } finally {
    closeQuietly(file);
  }
}

/** open(2) on the runtime's thread pool; the descriptor, or the fs error (with its code). */
function openOffThread(path: string, flags: number, mode: number): Promise<number> {
  return new Promise((resolve, reject) => fs.open(path, flags, mode, (e, fd) => (e ? reject(e) : resolve(fd))));
}

/**
 * The checked read-only descriptor, exchanged for a writable one of the same inode: opened
 * again relative to the pinned parent with O_NOFOLLOW, and refused unless the device and
 * inode are the ones checked (the name was swapped in between).
 */
function reopenForWriting(
  checked: number,
  o: { at: string; name: string; base: string; stat: fs.BigIntStats },
): number {
  let fd: number;
  try {
    fd = fs.openSync(o.at, C.O_RDWR | C.O_NOFOLLOW | C.O_NONBLOCK);
  } catch (e) {
    throw walkError(e, o.name, o.base, o.at);
  } finally {
    closeQuietly(checked);
  }
  const now = fs.fstatSync(fd, { bigint: true });
  if (now.dev !== o.stat.dev || now.ino !== o.stat.ino) {
    closeQuietly(fd);
    throw refuse("EAGAIN", `Cannot open ${o.name}: it was replaced while opening; try again`);
  }
  return fd;
}
