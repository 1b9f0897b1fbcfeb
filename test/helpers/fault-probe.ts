/**
 * A child process for malloc-tuning.test.ts: with "tuned", tunes the allocator first; then
 * allocates, touches and frees a sync's kinds of buffers ROUNDS times (8 of 1 MiB at a time,
 * freed at once as the engine does: releaseBuffer): typed arrays (Deno allocates them through
 * malloc) and cipher outputs (node:crypto's, as the record channel seals), and prints the
 * minor page faults that took (from /proc/self/stat) with the tuning's outcome, as one JSON line.
 */
import fs from "node:fs";
import { createCipheriv } from "node:crypto";
import process from "node:process";
import { tuneMalloc } from "../../src/platform/malloc-tuning.ts";
import { releaseBuffer } from "../../src/util/release-buffer.ts";

const ROUNDS = 30;
const BUFFERS = 8;

function minorFaults(): number {
  // Field 10 (minflt) of /proc/self/stat; the command name (2) is in parentheses and may hold spaces.
  const stat = fs.readFileSync("/proc/self/stat", "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[7]);
}

const tuning = process.argv[2] === "tuned" ? tuneMalloc() : undefined;
// One untimed round first: code and heap pages the loop needs fault in here, not below.
const plaintext = new Uint8Array(1 << 20).fill(1);
const cipher = createCipheriv("chacha20-poly1305", new Uint8Array(32), new Uint8Array(12), { authTagLength: 16 });
/** Buffers freed at once (releaseBuffer): the rest wait for the GC, and their faults for its timing. */
let released = 0;
const round = () => {
  const arrays = Array.from({ length: BUFFERS }, () => new Uint8Array(1 << 20).fill(1));
  for (const b of arrays) if (releaseBuffer(b)) released++;
  const sealed = Array.from({ length: BUFFERS }, () => cipher.update(plaintext));
  for (const b of sealed) if (releaseBuffer(b)) released++;
};
round();
const before = minorFaults();
for (let i = 0; i < ROUNDS; i++) round();
const faults = minorFaults() - before;
console.log(JSON.stringify({ tuning, faults, pages: 2 * ROUNDS * BUFFERS * 256, released, buffers: 2 * (ROUNDS + 1) * BUFFERS }));
