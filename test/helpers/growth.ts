/**
 * Seeing a sync under way from outside: the bytes allocated in the destination's folder
 * grow (the destination itself, or the hidden journal or partial file beside it).
 */
import fs from "node:fs";
import path from "node:path";
import { waitFor } from "./network.ts";

/** Bytes allocated by the regular files directly in `dir` (hidden ones included). */
export function allocatedIn(dir: string): number {
  let total = 0;
  for (const name of fs.readdirSync(dir)) {
    try {
      const st = fs.statSync(path.join(dir, name));
      if (st.isFile()) total += st.blocks * 512;
    } catch {
      // Gone meanwhile (a partial file renamed, a journal removed).
    }
  }
  return total;
}

/** Resolves once `dir` holds `bytes` more than `from` (an earlier allocatedIn(dir)). */
export async function waitForGrowth(
  dir: string,
  options: { from: number; bytes: number; timeoutMs: number; what: string },
): Promise<void> {
  const { from, bytes } = options;
  await waitFor(() => allocatedIn(dir) >= from + bytes, { timeoutMs: options.timeoutMs, everyMs: 2, what: options.what });
}
