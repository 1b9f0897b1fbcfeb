/**
 * A record handed to a RecordChannel: one buffer, or parts that are sent back to back
 * (a message header, then a DATA payload) so that no one concatenates them. The bytes of a
 * record are its parts in order; how a record is split never shows on the wire.
 */
export type RecordParts = Uint8Array | readonly Uint8Array[];

/** Bytes of the record: the sum of its parts. */
export function recordLength(record: RecordParts): number {
  if (record instanceof Uint8Array) return record.length;
  let n = 0;
  for (const part of record) n += part.length;
  return n;
}

/**
 * The record as one buffer, to read it now: the buffer itself (or its only part) when there
 * is one, else a new buffer holding a copy of every part.
 */
export function joinRecord(record: RecordParts): Uint8Array {
  if (record instanceof Uint8Array) return record;
  if (record.length === 1) return record[0];
  return copyParts(record);
}

/**
 * The record as a buffer its receiver may keep: one buffer is given up by the sender (spec of
 * RecordChannel.send) and kept as it is; parts may be reused by the sender, so they are
 * copied, once, into a new buffer.
 */
export function keptRecord(record: RecordParts): Uint8Array {
  return record instanceof Uint8Array ? record : copyParts(record);
}

function copyParts(record: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(recordLength(record));
  let at = 0;
  for (const part of record) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** The first `n` bytes of the record (fewer if it is shorter), copied only when parts split them. */
export function recordHead(record: RecordParts, n: number): Uint8Array {
  if (record instanceof Uint8Array) return record.subarray(0, n);
  if (record.length > 0 && record[0].length >= n) return record[0].subarray(0, n);
  return joinRecord(record).subarray(0, n);
}
