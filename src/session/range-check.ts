/**
 * Checks on the ranges a peer names (peer input): their shape against the session's size
 * and block size, and that no two of a session's ranges overlap.
 */
import { ProtocolError } from "../../protocol/codec.ts";
import { DIGEST_SIZE, MAX_RANGE_BLOCKS } from "../../protocol/constants.ts";
import { CoveredBlocks } from "../engine/covered-blocks.ts";

export function checkRange(
  r: { type: string; offset: number; length: number; digests?: Uint8Array },
  session: { size: number; blockSize: number },
): void {
  const { size, blockSize: bs } = session;
  const end = r.offset + r.length;
  const blocks = Math.ceil(r.length / bs);
  if (r.offset % bs !== 0 || end > size || blocks > MAX_RANGE_BLOCKS || (end % bs !== 0 && end !== size)) {
    throw new ProtocolError(`${r.type}: range [${r.offset}, ${end}) is not block-aligned within ${size} bytes`);
  }
  if (r.digests && r.digests.length !== blocks * DIGEST_SIZE) {
    throw new ProtocolError(`${r.type}: ${r.digests.length / DIGEST_SIZE} digests for ${blocks} blocks`);
  }
}

/**
 * Every range (SIGS or READ_DIFF) a session has accepted, claimed on arrival: a range that
 * overlaps one claimed before, still open or long closed, is a ProtocolError at once, so
 * no block is ever covered twice. `unclosed` counts the claimed ranges not yet settled
 * (closed, or failed with ERROR).
 *
 * Invariant: the claimed blocks are kept as at most `maxIntervals` disjoint intervals
 * (CoveredBlocks); a claim that would keep more is a ProtocolError.
 */
export class RangeClaims {
  #claimed: CoveredBlocks;
  #blockSize: number;
  #unclosed = new Set<number>();

  constructor(options: { blockSize: number; maxIntervals: number }) {
    this.#blockSize = options.blockSize;
    this.#claimed = new CoveredBlocks({ maxIntervals: options.maxIntervals });
  }

  /** Claims a range already checked by checkRange; throws a ProtocolError when it overlaps. */
  claim(r: { type: string; offset: number; length: number }): void {
    const first = r.offset / this.#blockSize;
    try {
      this.#claimed.add(first, Math.ceil(r.length / this.#blockSize));
    } catch (e) {
      throw new ProtocolError(`${r.type} [${r.offset}, ${r.offset + r.length}): ${(e as Error).message}`);
    }
    this.#unclosed.add(r.offset);
  }

  /** The range at `offset` is closed or failed; idempotent. */
  settle(offset: number): void {
    this.#unclosed.delete(offset);
  }

  get unclosed(): number {
    return this.#unclosed.size;
  }
}
