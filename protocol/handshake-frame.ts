import { HANDSHAKE_LENGTH_SIZE } from "./constants.ts";
import { ProtocolError } from "./codec.ts";
import type { FrameFormat } from "./frame-reader.ts";

/**
 * Handshake message framing (spec §1): a u16 big-endian length, then the Noise message.
 * A received length must equal the message's exact size (XX_MESSAGE_SIZES or
 * XXPSK3_MESSAGE_SIZES), checked before anything is read or allocated for it.
 */

/** The frame of one outgoing handshake message. */
export function encodeHandshakeFrame(message: Uint8Array): Uint8Array {
  if (message.length > 0xffff) {
    throw new RangeError(
      `Cannot frame a ${message.length}-byte handshake message: the limit is 65535 bytes`,
    );
  }
  const frame = new Uint8Array(HANDSHAKE_LENGTH_SIZE + message.length);
  frame[0] = message.length >>> 8;
  frame[1] = message.length;
  frame.set(message, HANDSHAKE_LENGTH_SIZE);
  return frame;
}

/** The format of the next received handshake frame, which must hold exactly `size` bytes. */
export function handshakeFrameFormat(size: number): FrameFormat {
  return {
    wordSize: HANDSHAKE_LENGTH_SIZE,
    bodyLength(length: number): number {
      if (length !== size) {
        throw new ProtocolError(`handshake message of ${length} bytes, expected ${size}`);
      }
      return length;
    },
  };
}
