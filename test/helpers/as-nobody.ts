/**
 * Permission tests run a child as user nobody (root bypasses mode bits). That needs root, and
 * a checkout and runtime that nobody can reach: a clone inside a 0700 directory is not.
 */
import { spawnSync } from "node:child_process";
import process from "node:process";

export const NOBODY = 65534;

/** Why a child cannot run our code as nobody here, or "" when it can. */
export function nobodyUnavailableReason(): string {
  if (typeof process.getuid !== "function" || process.getuid() !== 0) return "needs root to switch to user nobody";
  const source = new URL("../../src/cli/main.ts", import.meta.url).pathname;
  const asNobody = { uid: NOBODY, gid: NOBODY, stdio: "ignore" as const, timeout: 10_000 };
  if (spawnSync("cat", [source], asNobody).status !== 0) return `user nobody cannot read ${source}`;
  if (spawnSync(process.execPath, ["--version"], asNobody).status !== 0) return `user nobody cannot run ${process.execPath}`;
  return "";
}
