/**
 * The root hash both sides compare at COMMIT.
 *
 * Each closed range contributes HMAC-SHA256(key, "ssync-range" ‖ first block ‖ block count ‖
 * digests)[0:16], XORed into an accumulator (an XOR-MAC: order-independent, so ranges may
 * close out of order, and secure because the key is secret to the two peers). A range whose
 * blocks are all zero contributes nothing, so holes cost nothing. The root binds the
 * accumulator to the size, block size and number of blocks covered.
 *
 * Invariant: both sides add exactly the same ranges (those the client requested), so equal
 * roots mean equal final digests for every block. A range overlapping one added before is
 * refused, so `blocks` counts distinct blocks; so is one that would keep more than
 * `maxIntervals` disjoint covered intervals (a peer closing ranges far out of order).
 */
import { createHmac } from "node:crypto";
import { ProtocolError } from "../../protocol/codec.ts";
import { DIGEST_SIZE } from "../../protocol/constants.ts";
import { CoveredBlocks } from "./covered-blocks.ts";

const RANGE_LABEL = new TextEncoder().encode("ssync-range\0");
const ROOT_LABEL = new TextEncoder().encode("ssync-root\0");

export class RootHash {
  #key: Uint8Array;
  #acc = new Uint8Array(DIGEST_SIZE);
  #covered: CoveredBlocks;

  constructor(key: Uint8Array, options: { maxIntervals?: number } = {}) {
    this.#key = key;
    this.#covered = new CoveredBlocks({ maxIntervals: options.maxIntervals });
  }

  /** Distinct blocks covered by the ranges added. */
  get blocks(): number {
    return this.#covered.count;
  }

  add(firstBlock: number, digests: Uint8Array): void {
    const count = digests.length / DIGEST_SIZE;
    try {
      this.#covered.add(firstBlock, count);
    } catch (e) {
      throw new ProtocolError(`range at block ${firstBlock}: ${(e as Error).message}`);
    }
    if (digests.every((b) => b === 0)) return;
    const mac = createHmac("sha256", this.#key)
      .update(RANGE_LABEL)
      .update(u64(firstBlock))
      .update(u64(count))
      .update(digests)
      .digest();
    for (let i = 0; i < DIGEST_SIZE; i++) this.#acc[i] ^= mac[i];
  }

  finish(size: number, blockSize: number): Uint8Array {
    const mac = createHmac("sha256", this.#key)
      .update(ROOT_LABEL)
      .update(u64(size))
      .update(u64(blockSize))
      .update(u64(this.#covered.count))
      .update(this.#acc)
      .digest();
    return new Uint8Array(mac.subarray(0, DIGEST_SIZE));
  }
}

function u64(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
}
