/**
 * `--verify`: an independent, sequential re-read of both files after a sync, sharing
 * nothing with the engine but the storage layer. Holes common to both are skipped; every
 * other byte is read from both and compared exactly.
 */
import { Buffer } from "node:buffer";
import { openSource } from "../storage/open-source.ts";
import type { Extent, Storage } from "../storage/storage.ts";
import { MismatchError } from "../util/errors.ts";

const CHUNK = 1 << 20;

export interface VerifyResult {
  bytesCompared: number;
  bytesRead: number;
}

/** `open` opens `a` and `b` for reading instead of by name (a folder sync: never through a link). */
export async function verifyIdentical(a: string, b: string, options: { ffi?: boolean; open?: (name: string) => Promise<Storage> } = {}): Promise<VerifyResult> {
  const open = options.open ?? ((name: string) => openSource(name, options));
  const sa = await open(a);
  try {
    const sb = await open(b);
    try {
      if (sa.size !== sb.size) throw new MismatchError(`Verify failed: ${a} has ${sa.size} bytes but ${b} has ${sb.size}`);
      const union = mergeExtents([...(await sa.dataExtents(0, sa.size)), ...(await sb.dataExtents(0, sb.size))]);
      const ba = new Uint8Array(CHUNK);
      const bb = new Uint8Array(CHUNK);
      let bytesRead = 0;
      for (const e of union) {
        for (let at = e.offset; at < e.offset + e.length; at += CHUNK) {
          const n = Math.min(CHUNK, e.offset + e.length - at);
          const [na, nb] = await Promise.all([readFull(sa, ba.subarray(0, n), at), readFull(sb, bb.subarray(0, n), at)]);
          bytesRead += na + nb;
          if (na !== n || nb !== n || !Buffer.from(ba.buffer, 0, n).equals(Buffer.from(bb.buffer, 0, n))) {
            throw new MismatchError(`Verify failed: ${b} differs from ${a} within bytes ${at}..${at + n}`);
          }
        }
      }
      return { bytesCompared: sa.size, bytesRead };
    } finally {
      await sb[Symbol.asyncDispose]();
    }
  } finally {
    await sa[Symbol.asyncDispose]();
  }
}

async function readFull(s: { read(b: Uint8Array, p: number): Promise<number> }, buf: Uint8Array, pos: number): Promise<number> {
  let done = 0;
  while (done < buf.length) {
    const n = await s.read(buf.subarray(done), pos + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

function mergeExtents(list: Extent[]): Extent[] {
  list.sort((x, y) => x.offset - y.offset);
  const out: { offset: number; length: number }[] = [];
  for (const e of list) {
    const last = out[out.length - 1];
    if (last && e.offset <= last.offset + last.length) {
      last.length = Math.max(last.length, e.offset + e.length - last.offset);
    } else {
      out.push({ offset: e.offset, length: e.length });
    }
  }
  return out;
}
