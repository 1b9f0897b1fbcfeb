import { Buffer } from "node:buffer";
import { END_FLAG, LENGTH_MASK, MAX_SLOT_RECORD, RECORD_WORD_SIZE, TAG_SIZE } from "./constants.ts";
import { ProtocolError } from "./codec.ts";
import type { FrameFormat } from "./frame-reader.ts";

/**
 * The word before every record's ciphertext (spec §2): a u32, END_FLAG (bit 31) for the
 * END frame, the ciphertext length in LENGTH_MASK (bits 0–30). The ciphertext is the
 * record plaintext followed by its TAG_SIZE-byte tag, so:
 * - a data frame's ciphertext is TAG_SIZE … MAX_SLOT_RECORD + TAG_SIZE bytes (MAX_RECORD, the
 *   largest message, plus a batch's slot prefix: v1 decoding still refuses a message above MAX_RECORD);
 * - an END frame's is exactly TAG_SIZE (empty plaintext).
 * A valid word is fully determined by (ciphertext length, END), which is what lets a
 * receiver rebuild the associated data from a parsed frame.
 */

/** Largest ciphertext of a data frame. */
const MAX_CIPHERTEXT = MAX_SLOT_RECORD + TAG_SIZE;

/** True when `word` is the word of an END frame. */
export function isEndWord(word: number): boolean {
  return word >= END_FLAG;
}

/** The ciphertext length `word` announces; throws ProtocolError outside the limits above. */
export function recordCiphertextLength(word: number): number {
  const length = word & LENGTH_MASK;
  if (isEndWord(word) ? length !== TAG_SIZE : length < TAG_SIZE || length > MAX_CIPHERTEXT) {
    throw new ProtocolError(
      `invalid length field 0x${word.toString(16).padStart(8, "0")} (ciphertext must be ` +
        `${TAG_SIZE}..${MAX_CIPHERTEXT} bytes, exactly ${TAG_SIZE} for END)`,
    );
  }
  return length;
}

/** The 4 bytes of the word of a frame with this ciphertext length (also its associated data). */
export function encodeRecordWord(ciphertextLength: number, end: boolean): Uint8Array {
  const word = ((end ? END_FLAG : 0) | ciphertextLength) >>> 0;
  recordCiphertextLength(word);
  // Called twice per record: Buffer's pool is much cheaper than a new Uint8Array on Deno.
  const bytes = Buffer.allocUnsafe(RECORD_WORD_SIZE);
  bytes.writeUInt32BE(word, 0);
  return bytes;
}

/** Record frames for FrameReader. */
export const RECORD_FRAME_FORMAT: FrameFormat = Object.freeze({
  wordSize: RECORD_WORD_SIZE,
  bodyLength: recordCiphertextLength,
});
