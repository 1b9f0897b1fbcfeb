/**
 * Loop devices for block-device tests (Linux, root, `losetup`). `withLoopDevice` returns
 * null without running the body when loop devices cannot be set up here; the device is
 * always detached afterwards.
 */
import { execFileSync } from "node:child_process";

/** Why loop devices are unavailable, or "" when they work. */
export function loopDeviceUnavailableReason(): string {
  if (process.platform !== "linux") return "loop devices are Linux-only";
  if (typeof process.getuid === "function" && process.getuid() !== 0) {
    return "needs root for losetup";
  }
  try {
    execFileSync("losetup", ["--version"], { stdio: "ignore" });
  } catch {
    return "losetup is not installed";
  }
  return "";
}

/** Attaches `file` as a loop device, runs `body(device)`, detaches; null if losetup failed. */
export async function withLoopDevice<T>(
  file: string,
  body: (device: string) => Promise<T> | T,
): Promise<T | null> {
  let device: string;
  try {
    device = execFileSync("losetup", ["-f", "--show", file], { encoding: "utf8" }).trim();
  } catch {
    return null;
  }
  try {
    return await body(device);
  } finally {
    for (let i = 0; i < 5; i++) {
      try {
        execFileSync("losetup", ["-d", device], { stdio: "ignore" });
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 100)); // still busy: an fd closing
      }
    }
  }
}
