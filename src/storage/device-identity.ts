/**
 * What a block device is, independently of the name it was reached by and of its device
 * number (dm and loop minors change across reboots): the journal of a device is named after
 * it and checked against it (work-files.ts, recover-journal.ts), so that one device reached
 * as /dev/vg/lv and /dev/dm-3 has one journal, and a journal is never applied to another disk
 * that took a device's name.
 *
 * From sysfs, the first that exists: a device-mapper UUID (LVM, LUKS), a loop device's
 * backing file and offset, a disk's WWID or serial (a partition: its disk's, plus its number).
 * Undefined when none does (the journal is then named after the path, and only the size is
 * checked).
 */
import fs from "node:fs";
import { deviceNumber } from "./block-device-size.ts";

function read(path: string): string | undefined {
  try {
    const text = fs.readFileSync(path, "utf8").trim();
    return text === "" ? undefined : text;
  } catch {
    return undefined;
  }
}

function identityAt(sys: string): string | undefined {
  const dm = read(`${sys}/dm/uuid`);
  if (dm) return `dm:${dm}`;
  const backing = read(`${sys}/loop/backing_file`);
  if (backing) return `loop:${backing}@${read(`${sys}/loop/offset`) ?? "0"}`;
  const wwid = read(`${sys}/device/wwid`) ?? read(`${sys}/wwid`);
  if (wwid) return `wwid:${wwid}`;
  const serial = read(`${sys}/device/serial`) ?? read(`${sys}/serial`);
  if (serial) return `serial:${serial}`;
  return undefined;
}

export function deviceIdentity(rdev: bigint): string | undefined {
  const sys = `/sys/dev/block/${deviceNumber(rdev)}`;
  const own = identityAt(sys);
  if (own) return own;
  const partition = read(`${sys}/partition`);
  if (!partition) return undefined;
  const disk = identityAt(`${sys}/..`);
  return disk ? `${disk}#${partition}` : undefined;
}
