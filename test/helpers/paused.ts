/** Waiting for a child ssync to reach the test-only pause (SSYNC_TEST_PAUSE_FILE, src/session/test-pause.ts). */
import type { ChildProcess } from "node:child_process";
import fs from "node:fs";

/** Resolves true once `file` exists (the pause hook writes it), false if `child` exits first; bounded. */
export async function paused(file: string, child: ChildProcess, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!fs.existsSync(file)) {
    if (child.exitCode !== null || child.signalCode !== null) return false;
    if (Date.now() > end) throw new Error(`the sync did not pause within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return true;
}
