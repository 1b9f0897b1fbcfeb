/**
 * Checks the listener's exports at start, so a typo is refused then rather than reported to
 * a client later as "no such file": each path must exist (links are followed: an admin names
 * /dev/vg0/disk, a link to /dev/dm-3), be a regular file, a block device or a folder (then its
 * NAME is one path component: clients name NAME/PATH under it, spec "Batches", folder exports), and open for reading.
 */
import fs from "node:fs";
import { ErrnoError } from "../util/errors.ts";

function kindOf(st: fs.Stats): string {
  if (st.isDirectory()) return "a directory";
  if (st.isCharacterDevice()) return "a character device";
  if (st.isFIFO()) return "a named pipe";
  if (st.isSocket()) return "a socket";
  return "not a regular file";
}

/** Throws an ErrnoError naming the first unusable export (NAME=PATH) and why. */
export function checkExports(exports: ReadonlyMap<string, string>): void {
  for (const [name, path] of exports) {
    const fail = (code: string, why: string): never => {
      throw new ErrnoError(code, `Cannot export ${name}=${path}: ${why}`);
    };
    let st: fs.Stats;
    try {
      st = fs.statSync(path);
    } catch (e) {
      const code = (e as { code?: string }).code ?? "EIO";
      if (code === "ENOENT") fail(code, "no such file or block device");
      if (code === "EACCES") fail(code, "permission denied (a folder on the way cannot be searched)");
      if (code === "ENOTDIR") fail("ENOENT", "a component of the path is not a folder");
      fail(code, (e as Error).message);
    }
    const folder = st!.isDirectory();
    if (!st!.isFile() && !st!.isBlockDevice() && !folder) fail("EINVAL", `${kindOf(st!)}, not a regular file, block device or folder`);
    if (folder && (name.includes("/") || name === "." || name === "..")) fail("EINVAL", "a folder's export name must be one path component (no /)");
    try {
      fs.closeSync(fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK | (folder ? fs.constants.O_DIRECTORY : 0)));
    } catch (e) {
      const code = (e as { code?: string }).code ?? "EIO";
      fail(code, code === "EACCES" ? "permission denied: the listener cannot read it" : `cannot open it: ${(e as Error).message}`);
    }
  }
}
