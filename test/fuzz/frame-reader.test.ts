/**
 * Fuzzing the frame reader (protocol/frame-reader.ts): the same bytes cut into random chunks
 * (single bytes, empty chunks, frames split anywhere) give exactly the frames a one-pass
 * reference reader finds; a bad length word is a ProtocolError after exactly the frames
 * before it, and the reader stays dead.
 */
import { Buffer } from "node:buffer";
import { test } from "node:test";
import assert from "node:assert/strict";
import { ProtocolError } from "../../protocol/codec.ts";
import { END_FLAG, LENGTH_MASK, MAX_RECORD, TAG_SIZE } from "../../protocol/constants.ts";
import { type Frame, type FrameFormat, FrameReader } from "../../protocol/frame-reader.ts";
import { encodeRecordWord, RECORD_FRAME_FORMAT } from "../../protocol/record-word.ts";
import { forEachSeed, fuzzIterations, type Random } from "./random.ts";

interface Parsed {
  frames: Frame[];
  error: unknown;
  /** Bytes of a frame begun but not finished at the end. */
  partial: boolean;
}

/** One pass over the whole stream, the obvious way. */
function reference(format: FrameFormat, bytes: Uint8Array): Parsed {
  const frames: Frame[] = [];
  let at = 0;
  while (at < bytes.length) {
    if (at + format.wordSize > bytes.length) return { frames, error: null, partial: true };
    let word = 0;
    for (let i = 0; i < format.wordSize; i++) word = word * 256 + bytes[at + i];
    let length: number;
    try {
      length = format.bodyLength(word);
    } catch (error) {
      return { frames, error, partial: true };
    }
    if (at + format.wordSize + length > bytes.length) return { frames, error: null, partial: true };
    frames.push({ word, body: bytes.subarray(at + format.wordSize, at + format.wordSize + length) });
    at += format.wordSize + length;
  }
  return { frames, error: null, partial: false };
}

/** The reader under test, fed `bytes` in random chunks. */
function chunked(rng: Random, format: FrameFormat, bytes: Uint8Array): Parsed {
  const reader = new FrameReader(format);
  const frames: Frame[] = [];
  let at = 0;
  const sizes = [0, 1, 2, 3, format.wordSize, 7, 16, 100, 4096, 65536];
  while (at < bytes.length) {
    const n = Math.min(bytes.length - at, rng.chance(0.5) ? rng.pick(sizes) : rng.int(300));
    // A copy, as a socket would hand it: the reader must not depend on the stream's buffer.
    reader.push(bytes.slice(at, at + n));
    at += n;
    for (;;) {
      let f: Frame | null;
      try {
        f = reader.next();
      } catch (error) {
        // Dead from now on: the same error again, whatever comes.
        assert.throws(() => reader.next(), (e) => e === error);
        return { frames, error, partial: true };
      }
      if (f === null) break;
      frames.push({ word: f.word, body: f.body.slice() });
    }
  }
  return { frames, error: null, partial: reader.inFrame };
}

function assertSame(actual: Parsed, expected: Parsed): void {
  assert.equal(actual.frames.length, expected.frames.length, "frames");
  actual.frames.forEach((f, i) => {
    assert.equal(f.word, expected.frames[i].word, `word of frame ${i}`);
    assert.ok(Buffer.from(f.body).equals(Buffer.from(expected.frames[i].body)), `body of frame ${i}`);
  });
  assert.equal(actual.error === null, expected.error === null, `error: ${actual.error} vs ${expected.error}`);
  if (actual.error !== null) {
    assert.ok(actual.error instanceof ProtocolError, String(actual.error));
    assert.equal((actual.error as Error).message, (expected.error as Error).message);
  }
  assert.equal(actual.partial, expected.partial, "a frame cut short at the end");
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Record frames (spec §2): data frames of every size class, END frames, now and then a bad word. */
function recordStream(rng: Random): Uint8Array {
  const parts: Uint8Array[] = [];
  for (let k = rng.range(0, 12); k > 0; k--) {
    if (rng.chance(0.05)) {
      const bad = rng.pick([
        rng.int(TAG_SIZE), // shorter than a tag
        MAX_RECORD + TAG_SIZE + 1 + rng.int(1000), // longer than the largest record
        LENGTH_MASK,
        (END_FLAG | (TAG_SIZE + 1 + rng.int(100))) >>> 0, // END with a body
        END_FLAG >>> 0,
      ]);
      const w = new Uint8Array(4);
      new DataView(w.buffer).setUint32(0, bad);
      parts.push(w, rng.bytes(rng.int(40)));
      continue;
    }
    const end = rng.chance(0.1);
    const length = end ? TAG_SIZE : rng.chance(0.03) ? MAX_RECORD + TAG_SIZE : TAG_SIZE + rng.int(rng.chance(0.2) ? 200_000 : 300);
    parts.push(encodeRecordWord(length, end), rng.bytes(length));
  }
  if (rng.chance(0.3)) parts.push(rng.bytes(rng.int(20))); // a frame cut short
  return concat(parts);
}

/** A format with a 1–4 byte word; words above a limit are refused. */
function randomFormat(rng: Random): FrameFormat {
  const wordSize = rng.range(1, 4);
  const limit = rng.pick([0, 1, 255, 5000]);
  return {
    wordSize,
    bodyLength(word: number): number {
      if (word > limit) throw new ProtocolError(`word ${word} above ${limit}`);
      return word;
    },
  };
}

const ITERATIONS = fuzzIterations(400);

test("fuzz: record frames in random chunks come out exactly as a one-pass read finds them", { timeout: 60_000 }, async () => {
  await forEachSeed({ iterations: ITERATIONS, firstSeed: 3000, name: "frame reader (records)" }, (rng) => {
    const bytes = recordStream(rng);
    assertSame(chunked(rng, RECORD_FRAME_FORMAT, bytes), reference(RECORD_FRAME_FORMAT, bytes));
  });
});

test("fuzz: random words and bytes, any word size, in random chunks", { timeout: 60_000 }, async () => {
  await forEachSeed({ iterations: ITERATIONS, firstSeed: 4000, name: "frame reader (random)" }, (rng) => {
    const format = randomFormat(rng);
    // Mostly small words, so that many frames parse before a refusal.
    const bytes = rng.bytes(rng.int(3000)).map((b) => (rng.chance(0.8) ? b % 8 : b));
    assertSame(chunked(rng, format, bytes), reference(format, bytes));
  });
});
