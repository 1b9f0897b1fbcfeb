/** Checks a requested range against the session's size and block size (peer input). */
import { ProtocolError } from "../../protocol/codec.ts";
import { DIGEST_SIZE, MAX_RANGE_BLOCKS } from "../../protocol/constants.ts";

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
