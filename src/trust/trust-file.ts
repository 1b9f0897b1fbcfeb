/**
 * Files that decide who is trusted (authorized_keys, known_hosts, private keys) are believed
 * only when nobody but root and us could have written them: anyone who could change such a
 * file, or any folder on its way, could let themselves in (OpenSSH's StrictModes). The walk:
 *
 * 1. The path is walked from `/` one component at a time with lstat, as the kernel resolves
 *    it (a relative path starts at the working directory; ".." goes up from where the walk
 *    really is, so a link before it is honoured as the kernel would).
 * 2. Every folder passed must be owned by root or by us and not writable by group or others.
 *    The one exception is a sticky folder owned by root (/tmp, mode 1777): others may add
 *    entries there but cannot rename or remove ours, and the next component is checked for
 *    its own owner.
 * 3. A symbolic link among the folders is followed only when root or we own it (its folder
 *    was checked in 2, so nobody else can replace it); at most MAX_LINKS of them.
 * 4. The file itself must not be a symbolic link, must be a regular file owned by root or us,
 *    and not writable by group or others (a private key: no access at all for them).
 * 5. It is opened with O_NOFOLLOW and must be the very file the walk checked (device, inode).
 *
 * "Us" is the effective uid. Where the runtime has no uids (not POSIX) owners are not checked.
 * Refusals read "Refusing <what> <path>: <reason>; <how to fix it>".
 */
import { constants, promises as fs, type Stats } from "node:fs";
import { dirname, isAbsolute } from "node:path";
import process from "node:process";
import { ErrnoError } from "../util/errors.ts";

/** Symbolic links followed in one walk before it is refused, as the kernel's ELOOP. */
export const MAX_LINKS = 40;

/** The sticky bit (node:fs constants lack it). */
const S_ISVTX = 0o1000;

export interface TrustFileOptions {
  /** What the file is, for messages: "authorized keys", "known hosts", "key". */
  what: string;
  /** A private key: group and others must have no access at all, not only no write. */
  privateKey?: boolean;
}

function ourUid(): number | null {
  if (typeof process.geteuid === "function") return process.geteuid();
  if (typeof process.getuid === "function") return process.getuid();
  return null;
}

const octal = (mode: number) => (mode & 0o7777).toString(8).padStart(4, "0");

function refusal(options: TrustFileOptions, path: string, reason: string): Error {
  return new Error(`Refusing ${options.what} ${path}: ${reason}`);
}

function ownedByUs(st: Stats, uid: number | null): boolean {
  return uid === null || st.uid === 0 || st.uid === uid;
}

function checkFolder(dir: string, st: Stats, uid: number | null, path: string, options: TrustFileOptions): void {
  if (!ownedByUs(st, uid)) {
    throw refusal(
      options,
      path,
      `its folder ${dir} is owned by uid ${st.uid}, not by root or by us (uid ${uid}); ` +
        `run chown ${uid} ${dir}, or keep the file in a folder only root or we can change`,
    );
  }
  const stickyRootFolder = (st.mode & S_ISVTX) !== 0 && st.uid === 0;
  if ((st.mode & 0o022) !== 0 && !stickyRootFolder) {
    throw refusal(
      options,
      path,
      `its folder ${dir} is writable by group or others (mode ${octal(st.mode)}); run chmod go-w ${dir}`,
    );
  }
}

function checkFile(st: Stats, uid: number | null, path: string, options: TrustFileOptions): void {
  if (!st.isFile()) throw refusal(options, path, "it is not a regular file");
  if (!ownedByUs(st, uid)) {
    throw refusal(options, path, `it is owned by uid ${st.uid}, not by root or by us (uid ${uid}); run chown ${uid} ${path}`);
  }
  const mode = st.mode & 0o777;
  if (options.privateKey && (mode & 0o077) !== 0) {
    const how = (mode & 0o044) !== 0 ? "readable" : "accessible";
    throw refusal(options, path, `it is ${how} by others (mode ${octal(mode)}); run chmod 600 ${path}`);
  }
  if ((mode & 0o022) !== 0) {
    throw refusal(options, path, `it is writable by group or others (mode ${octal(mode)}); run chmod go-w ${path}`);
  }
}

function cannot(options: TrustFileOptions, path: string, error: unknown): Error {
  const code = (error as NodeJS.ErrnoException).code;
  const why = code === "EACCES" ? "permission denied" : (error as Error).message;
  return new ErrnoError(code ?? "EIO", `Cannot read ${options.what} ${path}: ${why}`, { cause: error });
}

/** The walk of steps 1–4 to a file or (to create a file in it) a folder; null: not there. */
async function walk(path: string, final: "file" | "folder", shown: string, options: TrustFileOptions): Promise<Stats | null> {
  const uid = ourUid();
  const absolute = isAbsolute(path) ? path : `${process.cwd()}/${path}`;
  // A stack: the next component is last. Links push their target's components.
  const pending = absolute.split("/").filter((c) => c !== "" && c !== ".").reverse();
  let current = "/";
  let links = 0;
  checkFolder("/", await fs.lstat("/"), uid, shown, options);
  while (pending.length > 0) {
    const name = pending.pop()!;
    if (name === "..") {
      current = dirname(current); // `current` holds no links, so this is the real parent
      continue;
    }
    const next = current === "/" ? `/${name}` : `${current}/${name}`;
    let st: Stats;
    try {
      st = await fs.lstat(next);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw cannot(options, shown, error);
    }
    const last = pending.length === 0;
    if (st.isSymbolicLink()) {
      const target = await fs.readlink(next);
      if (last && final === "file") {
        throw refusal(options, shown, `it is a symbolic link (to ${target}); replace the link with the file itself`);
      }
      if (!ownedByUs(st, uid)) {
        throw refusal(
          options,
          shown,
          `its folder ${next} is a symbolic link owned by uid ${st.uid}, not by root or by us (uid ${uid}); ` +
            `run chown -h ${uid} ${next}, or name the real folder`,
        );
      }
      if (++links > MAX_LINKS) {
        throw new ErrnoError("ELOOP", `Cannot read ${options.what} ${shown}: more than ${MAX_LINKS} symbolic links on its way`);
      }
      if (isAbsolute(target)) current = "/";
      pending.push(...target.split("/").filter((c) => c !== "" && c !== ".").reverse());
      continue;
    }
    if (last && final === "file") {
      checkFile(st, uid, shown, options);
      return st;
    }
    if (!st.isDirectory()) throw new ErrnoError("ENOTDIR", `Cannot read ${options.what} ${shown}: ${next} is not a folder`);
    checkFolder(next, st, uid, shown, options);
    current = next;
  }
  if (final === "folder") return await fs.lstat(current); // checked when the walk entered it
  throw refusal(options, shown, "it is not a regular file");
}

/**
 * Steps 1–4: the file's lstat when nobody but root and us can change it, null when it (or
 * a folder on its way) does not exist; the folders walked until then are checked all the same.
 */
export function checkTrustPath(path: string, options: TrustFileOptions): Promise<Stats | null> {
  return walk(path, "file", path, options);
}

/**
 * Reads a trust file after checking it (steps 1–5); null when it does not exist.
 * `maxBytes` bounds what is read (an error beyond it).
 */
export async function readTrustFile(path: string, options: TrustFileOptions & { maxBytes?: number }): Promise<string | null> {
  const checked = await checkTrustPath(path, options);
  if (checked === null) return null;
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw cannot(options, path, error);
  }
  try {
    const st = await handle.stat();
    if (st.dev !== checked.dev || st.ino !== checked.ino) {
      throw refusal(options, path, "it was replaced while it was being checked; try again");
    }
    checkFile(st, ourUid(), path, options);
    if (options.maxBytes !== undefined && st.size > options.maxBytes) {
      throw new Error(`Cannot read ${options.what} ${path}: ${st.size} bytes is too large (at most ${options.maxBytes})`);
    }
    return await handle.readFile("utf8");
  } finally {
    await handle.close();
  }
}

/**
 * Steps 1–3 for the folder `file` is about to be created in, so a trust file is never written
 * where it would be refused when read back. Throws when the folder does not exist.
 */
export async function checkTrustFolder(file: string, options: TrustFileOptions): Promise<void> {
  const dir = dirname(isAbsolute(file) ? file : `${process.cwd()}/${file}`);
  if ((await walk(dir, "folder", file, options)) === null) {
    throw new ErrnoError("ENOENT", `Cannot write ${options.what} ${file}: its folder ${dir} does not exist`);
  }
}

/**
 * Replaces the trust file `path` with `text` atomically: written to a new file beside it
 * (O_EXCL, the old file's mode without group/other write, else `mode`), flushed, renamed over
 * it, and the folder flushed. Readers see the whole old file or the whole new one. The folder
 * is checked first (steps 1–3), so the file is never written where it would be refused.
 * Not a lock: an entry another process appends between our read and the rename is lost.
 */
export async function rewriteTrustFile(path: string, text: string, options: TrustFileOptions & { mode?: number }): Promise<void> {
  await checkTrustFolder(path, options);
  const old = await checkTrustPath(path, options);
  const mode = (old === null ? options.mode ?? 0o644 : old.mode & 0o777) & ~0o022;
  const dir = dirname(isAbsolute(path) ? path : `${process.cwd()}/${path}`);
  const temp = `${dir}/.${path.split("/").pop()}.ssync-new-${process.pid}-${Date.now()}`;
  const handle = await fs.open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
  try {
    try {
      await handle.chmod(mode); // the umask can only remove bits
      await handle.writeFile(text);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(temp, path);
  } catch (error) {
    await fs.rm(temp, { force: true });
    throw new ErrnoError((error as NodeJS.ErrnoException).code ?? "EIO", `Cannot write ${options.what} ${path}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  const folder = await fs.open(dir, constants.O_RDONLY);
  try {
    await folder.sync();
  } finally {
    await folder.close();
  }
}
