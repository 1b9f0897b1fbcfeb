/**
 * `ssync recover DST`: what the next sync into DST would do first, on its own — completes
 * a sync that was interrupted after its commit point (DST becomes the new image) or rolls
 * back one interrupted before it (DST stays the old image). Either way DST is whole after.
 */
import fs from "node:fs";
import type { CAC } from "cac";
import { openDestination } from "../storage/open-destination.ts";
import { workFileBeside } from "../storage/work-files.ts";

/** How long recover waits for a sync that is still running to let go of DST. */
const RECOVER_LOCK_WAIT_MS = 5000;

export function registerRecoverCommand(cli: CAC, setRun: (run: () => Promise<void>) => void): void {
  cli.command("recover <dst>", "Complete or roll back an interrupted sync into DST (the next sync does it too)")
    .example("  ssync recover /backup/vm.img")
    .action((dst: string) => {
      setRun(async () => {
        console.log(await recover(dst));
      });
    });
}

/** Recovers `dst` and says what was done, in one line. */
export async function recover(dst: string): Promise<string> {
  if (!fs.existsSync(dst)) {
    const partial = workFileBeside(dst, "partial");
    if (fs.existsSync(partial)) return `${dst} does not exist yet: the next sync to it resumes from ${partial}`;
    return `${dst}: nothing to recover (it does not exist, and no sync into it was interrupted)`;
  }
  const lines: string[] = [];
  const store = await openDestination(dst, { create: false, lockWaitMs: RECOVER_LOCK_WAIT_MS, log: (m) => lines.push(m) });
  await store[Symbol.asyncDispose]();
  return lines.length > 0 ? lines.join("\n") : `${dst}: nothing to recover (no interrupted sync)`;
}
