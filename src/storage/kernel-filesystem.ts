/**
 * Folders where ssync never creates a file: the kernel's own filesystems. A name there that
 * does not exist is a typo (/dev/sdzz for /dev/sdz); creating it would make a RAM-backed
 * regular file in devtmpfs, which the next boot forgets, or fail oddly (proc, sysfs).
 *
 * A folder's filesystem is found in /proc/self/mountinfo by its device number (st_dev): the
 * kernel's filesystems by type, and whatever is mounted at /dev (a container's /dev is often a
 * tmpfs). statfs cannot tell them apart: devtmpfs reports tmpfs's magic. Without a readable
 * mountinfo nothing is refused.
 * mountinfo is read at most once per MOUNTINFO_TTL_MS (a batch creates many files; reading
 * and parsing it per file cost ~0.3 ms each): a mount made in the last second may be missed,
 * acceptable for this guard against typos (confinement never relies on it).
 */
import fs from "node:fs";
import { deviceNumber } from "./block-device-size.ts";
import { storageError } from "./storage-error.ts";

const KERNEL_TYPES = new Set([
  "devtmpfs",
  "devpts",
  "proc",
  "sysfs",
  "debugfs",
  "tracefs",
  "securityfs",
  "cgroup",
  "cgroup2",
  "configfs",
  "pstore",
  "efivarfs",
  "bpf",
  "fusectl",
  "binfmt_misc",
]);

export interface KernelFilesystem {
  /** Where it is mounted (for /dev: "/dev"). */
  readonly mountPoint: string;
  /** Its type in mountinfo (devtmpfs, proc, sysfs…). */
  readonly type: string;
  /** It holds device nodes: a missing name there is a device that does not exist. */
  readonly devices: boolean;
}

const MOUNTINFO_TTL_MS = 1000;
let cached: { at: number; answers: Map<string, KernelFilesystem | undefined>; text: string | undefined } | undefined;

/** The kernel filesystem holding a folder whose st_dev is `dev`, or undefined for an ordinary one. */
export function kernelFilesystemOf(dev: bigint): KernelFilesystem | undefined {
  const now = Date.now();
  if (!cached || now - cached.at >= MOUNTINFO_TTL_MS || now < cached.at) {
    let text: string | undefined;
    try {
      text = fs.readFileSync("/proc/self/mountinfo", "utf8");
    } catch {
      text = undefined;
    }
    cached = { at: now, answers: new Map(), text };
  }
  if (cached.text === undefined) return undefined;
  const wanted = deviceNumber(dev);
  if (cached.answers.has(wanted)) return cached.answers.get(wanted);
  const answer = search(cached.text, wanted);
  cached.answers.set(wanted, answer);
  return answer;
}

function search(text: string, wanted: string): KernelFilesystem | undefined {
  let found: KernelFilesystem | undefined;
  // "36 35 98:0 /root /mount/point rw,noatime shared:1 - ext4 /dev/sda1 rw": the same
  // filesystem may be mounted at several points; /dev among them makes it /dev's.
  for (const line of text.split("\n")) {
    const [left, right] = line.split(" - ");
    if (right === undefined) continue;
    const fields = left.split(" ");
    if (fields[2] !== wanted) continue;
    const mountPoint = fields[4].replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
    const type = right.split(" ")[0];
    const devices = type === "devtmpfs" || mountPoint === "/dev";
    if (devices) return { mountPoint, type, devices };
    if (KERNEL_TYPES.has(type)) found ??= { mountPoint, type, devices };
  }
  return found;
}

/**
 * Refuses to create `path` (missing) in its folder, whose st_dev is `dev`, when that is a
 * kernel filesystem; the message names the path and why.
 */
export function refuseNewFileIn(path: string, dev: bigint): void {
  const k = kernelFilesystemOf(dev);
  if (!k) return;
  const reason = k.devices
    ? `it looks like a device that does not exist: ${k.mountPoint} holds the kernel's devices (${k.type}), and ssync never creates a file there; check the name (lsblk lists block devices)`
    : `${k.mountPoint} is a kernel filesystem (${k.type}), and ssync never creates a file there`;
  throw storageError("create", path, { code: k.devices ? "ENOENT" : "EACCES", reason });
}
