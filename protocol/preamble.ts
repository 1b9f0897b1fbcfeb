import {
  MODE_PAIRING,
  MODE_XX,
  PREAMBLE_MAGIC,
  PREAMBLE_SIZE,
  PROTOCOL_VERSION,
} from "./constants.ts";
import { ProtocolError } from "./codec.ts";

/**
 * The clear preamble (spec §1), PREAMBLE_SIZE bytes: PREAMBLE_MAGIC, u8 PROTOCOL_VERSION,
 * u8 mode (MODE_XX or MODE_PAIRING). The only bytes ever sent in clear; it is also the
 * start of the Noise prologue.
 */

export type PreambleMode = typeof MODE_XX | typeof MODE_PAIRING;

const VERSION_OFFSET = PREAMBLE_MAGIC.length;
const MODE_OFFSET = VERSION_OFFSET + 1;

export function encodePreamble(mode: PreambleMode): Uint8Array {
  const bytes = new Uint8Array(PREAMBLE_SIZE);
  bytes.set(PREAMBLE_MAGIC);
  bytes[VERSION_OFFSET] = PROTOCOL_VERSION;
  bytes[MODE_OFFSET] = mode;
  return bytes;
}

/** The mode of a received preamble; throws ProtocolError unless it is exactly a valid one. */
export function parsePreamble(bytes: Uint8Array): PreambleMode {
  const magicOk = bytes.length === PREAMBLE_SIZE && PREAMBLE_MAGIC.every((b, i) => bytes[i] === b);
  if (!magicOk || bytes[VERSION_OFFSET] !== PROTOCOL_VERSION) {
    throw new ProtocolError(`the peer did not send the ssync version ${PROTOCOL_VERSION} preamble`);
  }
  const mode = bytes[MODE_OFFSET];
  if (mode !== MODE_XX && mode !== MODE_PAIRING) {
    throw new ProtocolError(`the peer asked for handshake mode ${mode}, which does not exist`);
  }
  return mode;
}
