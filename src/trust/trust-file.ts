/**
 * Files that decide who is trusted (authorized_keys, known_hosts) must not be writable by
 * group or others: anyone who could write them could let themselves in (OpenSSH StrictModes).
 */
import { statSync } from "node:fs";

export function refuseIfWritableByOthers(path: string, what: string): void {
  const mode = statSync(path).mode & 0o777;
  if ((mode & 0o022) !== 0) {
    throw new Error(
      `Refusing ${what} ${path}: it is writable by group or others (mode ${mode.toString(8).padStart(4, "0")}); run chmod go-w ${path}`,
    );
  }
}
