/**
 * Page masks of PATCH (spec §3): one bit per SUB_BLOCK_SIZE page of a run, bit i in byte
 * i >> 3 at position i & 7 (least significant first), ⌈pages/8⌉ bytes.
 */
import { SUB_BLOCK_SIZE } from "../../protocol/constants.ts";

export function pageCount(length: number): number {
  return Math.ceil(length / SUB_BLOCK_SIZE);
}

export function newMask(pages: number): Uint8Array {
  return new Uint8Array(Math.ceil(pages / 8));
}

export function hasPage(mask: Uint8Array, i: number): boolean {
  return (mask[i >> 3] & (1 << (i & 7))) !== 0;
}

export function setPage(mask: Uint8Array, i: number): void {
  mask[i >> 3] |= 1 << (i & 7);
}

/** [from, to) of page `i` in a run of `length` bytes (only the file's last page is short). */
export function pageBounds(i: number, length: number): [number, number] {
  const from = i * SUB_BLOCK_SIZE;
  return [from, Math.min(length, from + SUB_BLOCK_SIZE)];
}
