import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { ProtocolError } from "../protocol/codec.ts";
import { END_FLAG, MAX_SLOT_RECORD, TAG_SIZE } from "../protocol/constants.ts";
import { type Frame, type FrameFormat, FrameReader } from "../protocol/frame-reader.ts";
import { encodeHandshakeFrame, handshakeFrameFormat } from "../protocol/handshake-frame.ts";
import { encodeRecordWord, isEndWord, RECORD_FRAME_FORMAT } from "../protocol/record-word.ts";

/** A record frame around a fake ciphertext of `length` bytes (the reader never decrypts). */
function recordFrame(length: number, options: { end?: boolean; fill?: number } = {}): Uint8Array {
  const word = encodeRecordWord(length, options.end ?? false);
  const out = new Uint8Array(word.length + length).fill(options.fill ?? length & 0xff);
  out.set(word);
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

function word(value: number): Uint8Array {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setUint32(0, value);
  return bytes;
}

/** Pushes each chunk and drains the reader after each: every frame, in order. */
function readAll(format: FrameFormat, chunks: Uint8Array[]): Frame[] {
  const reader = new FrameReader(format);
  const frames: Frame[] = [];
  for (const chunk of chunks) {
    reader.push(chunk);
    for (let f = reader.next(); f !== null; f = reader.next()) frames.push(f);
  }
  assert.equal(reader.inFrame, false, "no frame left half-read");
  return frames;
}

/** Counts Buffer.allocUnsafe calls (the reader's only allocation) during `run`. */
function countAllocations(run: () => void): number[] {
  const original = Buffer.allocUnsafe;
  const sizes: number[] = [];
  Buffer.allocUnsafe = (size: number) => {
    sizes.push(size);
    return original(size);
  };
  try {
    run();
  } finally {
    Buffer.allocUnsafe = original;
  }
  return sizes;
}

const LENGTHS = [TAG_SIZE, TAG_SIZE + 1, 100, 3000];
const STREAM = concat([
  ...LENGTHS.map((n) => recordFrame(n)),
  recordFrame(TAG_SIZE, { end: true }),
]);

function assertStream(frames: Frame[]): void {
  assert.deepEqual(frames.map((f) => f.body.length), [...LENGTHS, TAG_SIZE]);
  assert.deepEqual(frames.map((f) => isEndWord(f.word)), [false, false, false, false, true]);
  for (const f of frames) {
    assert.ok(f.body.every((b) => b === (f.body.length & 0xff)), "body bytes intact");
  }
}

describe("FrameReader: record frames", () => {
  test("a stream split at every byte boundary gives the same frames", () => {
    for (let cut = 0; cut <= STREAM.length; cut++) {
      assertStream(readAll(RECORD_FRAME_FORMAT, [STREAM.subarray(0, cut), STREAM.subarray(cut)]));
    }
  });

  test("a stream fed one byte at a time gives the same frames", () => {
    const bytes = Array.from(STREAM, (_, i) => STREAM.subarray(i, i + 1));
    assertStream(readAll(RECORD_FRAME_FORMAT, bytes));
  });

  test("many frames in one chunk come out as subarrays of it (no copy, no allocation)", () => {
    const chunk = concat(Array.from({ length: 1000 }, (_, i) => recordFrame(TAG_SIZE + (i % 50))));
    let frames: Frame[] = [];
    const allocations = countAllocations(() => {
      frames = readAll(RECORD_FRAME_FORMAT, [chunk]);
    });
    assert.equal(frames.length, 1000);
    assert.deepEqual(allocations, []);
    let offset = 0;
    for (const [i, f] of frames.entries()) {
      offset += 4;
      assert.equal(f.body.buffer, chunk.buffer, `frame ${i} shares the chunk's memory`);
      assert.equal(f.body.byteOffset, chunk.byteOffset + offset);
      assert.equal(f.body.length, TAG_SIZE + (i % 50));
      offset += f.body.length;
    }
  });

  test("a body straddling chunks is gathered into exactly one allocation of its length", () => {
    const frame = recordFrame(5000);
    let frames: Frame[] = [];
    const allocations = countAllocations(() => {
      frames = readAll(RECORD_FRAME_FORMAT, [
        frame.subarray(0, 100),
        frame.subarray(100, 4000),
        frame.subarray(4000),
      ]);
    });
    assert.deepEqual(allocations, [5000]);
    assert.deepEqual(new Uint8Array(frames[0].body), frame.slice(4));
  });

  test("a word whose body is in the next chunk is not copied either", () => {
    const frame = recordFrame(64);
    const body = frame.slice(4);
    const frames = readAll(RECORD_FRAME_FORMAT, [frame.subarray(0, 4), body]);
    assert.equal(frames[0].body.buffer, body.buffer);
  });

  test("a length field above the limit is rejected from the word alone, without allocation", () => {
    for (const value of [0x7fff_ffff, MAX_SLOT_RECORD + TAG_SIZE + 1, 0xffff_ffff]) {
      const reader = new FrameReader(RECORD_FRAME_FORMAT);
      const chunk = concat([word(value), new Uint8Array(1)]);
      const allocations = countAllocations(() => {
        reader.push(chunk);
        assert.throws(() => reader.next(), (e: Error) => {
          assert.ok(e instanceof ProtocolError);
          assert.match(
            e.message,
            new RegExp(`invalid length field 0x${value.toString(16).padStart(8, "0")}`),
          );
          return true;
        });
      });
      assert.deepEqual(allocations, []);
    }
  });

  test("the largest data frame, MAX_SLOT_RECORD + TAG_SIZE bytes (a message and a batch's slot), is accepted", () => {
    const frames = readAll(RECORD_FRAME_FORMAT, [recordFrame(MAX_SLOT_RECORD + TAG_SIZE)]);
    assert.equal(frames[0].body.length, MAX_SLOT_RECORD + TAG_SIZE);
  });

  test("an END frame must hold exactly TAG_SIZE bytes", () => {
    for (const length of [0, 1, TAG_SIZE - 1, TAG_SIZE + 1, 1000]) {
      const reader = new FrameReader(RECORD_FRAME_FORMAT);
      reader.push(word((END_FLAG | length) >>> 0));
      assert.throws(() => reader.next(), /invalid length field 0x800/);
    }
    const [end] = readAll(RECORD_FRAME_FORMAT, [recordFrame(TAG_SIZE, { end: true })]);
    assert.ok(isEndWord(end.word));
  });

  test("a zero-length or too-short data frame is rejected; TAG_SIZE bytes (empty record) is not", () => {
    for (const length of [0, 1, TAG_SIZE - 1]) {
      const reader = new FrameReader(RECORD_FRAME_FORMAT);
      reader.push(word(length));
      assert.throws(() => reader.next(), ProtocolError);
    }
    assert.equal(readAll(RECORD_FRAME_FORMAT, [recordFrame(TAG_SIZE)])[0].body.length, TAG_SIZE);
  });

  test("after a rejected word the reader stays dead", () => {
    const reader = new FrameReader(RECORD_FRAME_FORMAT);
    reader.push(concat([word(0), recordFrame(TAG_SIZE)]));
    assert.throws(() => reader.next(), /invalid length field 0x00000000/);
    assert.throws(() => reader.next(), /invalid length field 0x00000000/);
  });

  test("inFrame tells a truncated stream from one that ends at a boundary", () => {
    const reader = new FrameReader(RECORD_FRAME_FORMAT);
    const frame = recordFrame(TAG_SIZE);
    assert.equal(reader.inFrame, false);
    reader.push(frame.subarray(0, 2));
    assert.equal(reader.next(), null);
    assert.equal(reader.inFrame, true, "mid-word");
    reader.push(frame.subarray(2, 10));
    assert.equal(reader.next(), null);
    assert.equal(reader.inFrame, true, "mid-body");
    reader.push(frame.subarray(10));
    assert.notEqual(reader.next(), null);
    assert.equal(reader.inFrame, false);
  });

  test("pushing before the previous chunk is consumed is refused", () => {
    const reader = new FrameReader(RECORD_FRAME_FORMAT);
    reader.push(concat([recordFrame(TAG_SIZE), recordFrame(TAG_SIZE)]));
    assert.notEqual(reader.next(), null);
    assert.throws(() => reader.push(recordFrame(TAG_SIZE)), /Cannot push a chunk/);
  });

  test("encodeRecordWord refuses a word no receiver would accept", () => {
    assert.throws(() => encodeRecordWord(TAG_SIZE - 1, false), ProtocolError);
    assert.throws(() => encodeRecordWord(MAX_SLOT_RECORD + TAG_SIZE + 1, false), ProtocolError);
    assert.throws(() => encodeRecordWord(TAG_SIZE + 1, true), ProtocolError);
    assert.deepEqual([...encodeRecordWord(TAG_SIZE, true)], [0x80, 0, 0, 0x10]);
  });
});

describe("FrameReader: handshake frames", () => {
  test("a frame of the exact size is read, split at every byte boundary", () => {
    const message = new Uint8Array(96).map((_, i) => i);
    const frame = encodeHandshakeFrame(message);
    assert.deepEqual(frame.subarray(0, 2), new Uint8Array([0, 96]));
    for (let cut = 0; cut <= frame.length; cut++) {
      const frames = readAll(handshakeFrameFormat(96), [
        frame.subarray(0, cut),
        frame.subarray(cut),
      ]);
      assert.deepEqual(frames.map((f) => new Uint8Array(f.body)), [message]);
    }
  });

  test("a frame of the wrong length is rejected from its length alone, without allocation", () => {
    for (const length of [0, 31, 33, 0xffff]) {
      const reader = new FrameReader(handshakeFrameFormat(32));
      const allocations = countAllocations(() => {
        reader.push(new Uint8Array([length >> 8, length & 0xff, 1, 2, 3]));
        assert.throws(
          () => reader.next(),
          new RegExp(`handshake message of ${length} bytes, expected 32`),
        );
      });
      assert.deepEqual(allocations, []);
    }
  });
});
