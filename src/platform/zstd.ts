/**
 * zstd one-shot compression: the runtime's native `zlib.zstd*Sync` where it exists (Deno 2.9,
 * Node ≥ 22.15), else @bokuweb/zstd-wasm (loaded by `initZstd`, which callers await once).
 *
 * Invariants:
 * - Both backends produce and accept standard single zstd frames with the content size in
 *   the header, so either side of a connection may use either backend.
 * - `decompress` never produces, nor allocates for, more than `maxSize` output bytes: a frame
 *   whose header announces more is refused before decompressing; one without a size is
 *   decompressed into a buffer capped at `maxSize` and refused when it does not fit.
 * - `compress` returns exactly one frame. `decompress` takes whole frames: their block headers
 *   are walked first, so truncated input or trailing garbage is refused on both backends
 *   (Deno 2.9's native decoder would silently accept both).
 * - SSYNC_NO_NATIVE_ZSTD=1 (read at import time) makes the default backend wasm; the
 *   `backend` option chooses per call.
 */
import zlib from "node:zlib";
import { releaseBuffer } from "../util/release-buffer.ts";

export type ZstdBackend = "native" | "wasm";

export interface ZstdOptions {
  /** Defaults to native when available and not disabled, else wasm. */
  readonly backend?: ZstdBackend;
}

interface WasmZstd {
  compress(data: Uint8Array, level: number): Uint8Array;
  decompress(data: Uint8Array, opts: { defaultHeapSize: number }): Uint8Array;
}

// deno-lint-ignore no-explicit-any
const z = zlib as any;
const nativeAvailable = typeof z.zstdCompressSync === "function" &&
  typeof z.zstdDecompressSync === "function";
const nativeDisabled = (() => {
  try {
    return process.env.SSYNC_NO_NATIVE_ZSTD === "1";
  } catch {
    return false; // Deno without --allow-env
  }
})();

export const zstdStatus: { readonly native: boolean; readonly nativeAvailable: boolean } = Object
  .freeze({ native: nativeAvailable && !nativeDisabled, nativeAvailable });

let wasm: WasmZstd | null = null;
let wasmLoading: Promise<void> | null = null;

/**
 * Loads the wasm backend when it is the default or `options.wasm` asks for it; idempotent.
 * Native-only callers may skip it.
 */
export function initZstd(options: { wasm?: boolean } = {}): Promise<void> {
  if (zstdStatus.native && !options.wasm) return Promise.resolve();
  wasmLoading ??= (async () => {
    const mod = await import("@bokuweb/zstd-wasm");
    // deno-lint-ignore no-explicit-any
    const m: any = (mod as any).init ? mod : (mod as any).default;
    await m.init();
    wasm = { compress: m.compress, decompress: m.decompress };
  })();
  return wasmLoading;
}

function backendOf(options: ZstdOptions | undefined): ZstdBackend {
  const b = options?.backend ?? (zstdStatus.native ? "native" : "wasm");
  if (b === "native" && !nativeAvailable) {
    throw new Error("zstd: this runtime has no native zstd (zlib.zstdCompressSync)");
  }
  return b;
}

function wasmOrThrow(): WasmZstd {
  if (!wasm) throw new Error("zstd: the wasm backend is not loaded; await initZstd() first");
  return wasm;
}

/** One zstd frame holding `data`, with its content size in the header. */
export function compress(data: Uint8Array, level: number, options?: ZstdOptions): Uint8Array {
  if (backendOf(options) === "wasm") return owned(wasmOrThrow().compress(data, level));
  // One output chunk that the frame cannot fill (node:zlib allocates another whenever one
  // fills): the frame is a view of it, copied out to its own length below, and the chunk
  // released at once. Left to the GC, each call's chunks piled up in the worker's heap until
  // V8 collected (the peak RSS of a source that compresses, issue 9).
  const chunkSize = compressBound(data.length) + 1;
  const out = plain(z.zstdCompressSync(data, {
    params: { [z.constants.ZSTD_c_compressionLevel]: level },
    pledgedSrcSize: data.length,
    chunkSize,
  }));
  // Deno 2.9 appends an empty second frame; keep only the first.
  const first = frameLength(out, frameHeader(out));
  const frame = owned(first < out.length ? out.subarray(0, first) : out);
  // Only node:zlib's own chunk, now that nothing views it: a buffer of exactly chunkSize bytes
  // (a Buffer from node's pool would be a view of the pool's larger one).
  if (frame.buffer !== out.buffer && out.buffer.byteLength === chunkSize) releaseBuffer(new Uint8Array(out.buffer));
  return frame;
}

/** ZSTD_COMPRESSBOUND: the largest frame zstd makes of `n` bytes (one frame, no dictionary). */
export function compressBound(n: number): number {
  return n + (n >>> 8) + (n < 128 * 1024 ? (128 * 1024 - n) >>> 11 : 0);
}

/**
 * The frame in a buffer of its own: native output is a view of a larger buffer (Node's 64 KiB
 * zlib chunk, Deno's 16 KiB), which a worker's postMessage would clone whole instead of
 * transferring and nobody could release (util/release-buffer.ts) — a few dead KiB per 64 KiB
 * compressed. Copying the frame costs far less.
 */
function owned(frame: Uint8Array): Uint8Array {
  return frame.byteOffset === 0 && frame.length === frame.buffer.byteLength ? frame : frame.slice();
}

/**
 * The content of a zstd frame (or of concatenated frames, as zstd defines them); throws
 * RangeError when it would exceed `maxSize` bytes, Error when the input is not exactly
 * whole frames.
 */
export function decompress(data: Uint8Array, maxSize: number, options?: ZstdOptions): Uint8Array {
  const backend = backendOf(options);
  const frames: { start: number; end: number; contentSize: number | null }[] = [];
  let announced = 0;
  for (let pos = 0; pos < data.length || frames.length === 0;) {
    const rest = data.subarray(pos);
    const header = frameHeader(rest);
    announced += header.contentSize ?? 0;
    if (announced > maxSize) throw tooLarge(maxSize);
    const end = pos + frameLength(rest, header);
    if (end > data.length) throw new Error("zstd: cannot decompress: truncated frame");
    frames.push({ start: pos, end, contentSize: header.contentSize });
    pos = end;
  }
  if (frames.length === 1) return decompressFrame(data, { maxSize, backend, ...frames[0] });
  const parts: Uint8Array[] = [];
  let total = 0;
  for (const f of frames) {
    const part = decompressFrame(data.subarray(f.start, f.end), {
      maxSize: maxSize - total,
      backend,
      contentSize: f.contentSize,
    });
    parts.push(part);
    total += part.length;
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** One whole frame (already delimited), within `maxSize`. */
function decompressFrame(
  frame: Uint8Array,
  o: { maxSize: number; backend: ZstdBackend; contentSize: number | null },
): Uint8Array {
  const { maxSize, backend, contentSize } = o;
  if (contentSize === 0) return new Uint8Array(0);
  let out: Uint8Array;
  try {
    if (backend === "wasm") {
      // Known size: the wasm library allocates exactly that; unknown: capped at maxSize.
      out = wasmOrThrow().decompress(frame, { defaultHeapSize: Math.max(1, maxSize) });
    } else {
      // One byte more than the frame holds: node:zlib allocates a further chunk whenever one
      // fills, which would be garbage; the output, a view of the chunk, is cut to a buffer of
      // its own below (transfer: the chunk is freed at once).
      const chunkSize = Math.max(64, (contentSize ?? Math.min(maxSize, 1 << 20)) + 1);
      out = exactBuffer(plain(z.zstdDecompressSync(frame, { maxOutputLength: Math.max(1, maxSize), chunkSize })), chunkSize);
    }
  } catch (e) {
    if ((e as { code?: string }).code === "ERR_BUFFER_TOO_LARGE") throw tooLarge(maxSize);
    // The wasm library reports "... with code -N" (ZSTD_ErrorCode); 70 is dstSize_tooSmall.
    const wasmCode = /code -(\d+)/.exec(String((e as Error).message))?.[1];
    if (backend === "wasm" && wasmCode === "70") throw tooLarge(maxSize);
    const why = wasmCode ? `corrupt frame (zstd error ${wasmCode})` : (e as Error).message;
    throw new Error(`zstd: cannot decompress: ${why}`, { cause: e });
  }
  out = plain(out);
  if (out.length > maxSize) throw tooLarge(maxSize);
  if (contentSize !== null && out.length !== contentSize) {
    throw new Error(
      `zstd: cannot decompress: frame announced ${contentSize} bytes, held ${out.length}`,
    );
  }
  return out;
}

/**
 * `out` as a buffer of its own length when it is the start of node:zlib's chunk of
 * `chunkSize` bytes: the chunk is detached (its memory freed or reused now, not at V8's next
 * collection) and what it held moves to a buffer of exactly out.length bytes. Anything else
 * (a pooled Buffer, a concatenation, a runtime without transfer) is returned as it is.
 */
function exactBuffer(out: Uint8Array, chunkSize: number): Uint8Array {
  const buffer = out.buffer as ArrayBuffer & { transfer?: (length: number) => ArrayBuffer };
  if (out.byteOffset !== 0 || out.length === buffer.byteLength || buffer.byteLength !== chunkSize) return out;
  if (!(buffer instanceof ArrayBuffer) || typeof buffer.transfer !== "function") return out;
  return new Uint8Array(buffer.transfer(out.length));
}

/** A plain Uint8Array view (native zlib returns Buffers); no copy. */
function plain(b: Uint8Array): Uint8Array {
  return b.constructor === Uint8Array ? b : new Uint8Array(b.buffer, b.byteOffset, b.length);
}

function tooLarge(maxSize: number): RangeError {
  return Object.assign(new RangeError(`zstd: data decompresses to more than ${maxSize} bytes`), {
    code: "ERR_ZSTD_TOO_LARGE",
  });
}

interface FrameHeader {
  /** Frame_Content_Size, or null when absent. */
  readonly contentSize: number | null;
  readonly headerLength: number;
  readonly checksum: boolean;
}

/** Parses the frame header at the start of `data` (RFC 8878 §3.1.1.1). */
function frameHeader(data: Uint8Array): FrameHeader {
  if (
    data.length < 5 || data[0] !== 0x28 || data[1] !== 0xb5 || data[2] !== 0x2f ||
    data[3] !== 0xfd
  ) {
    throw new Error("zstd: not a zstd frame");
  }
  const fhd = data[4];
  const fcsFlag = fhd >> 6;
  const singleSegment = (fhd >> 5) & 1;
  const dictIdBytes = [0, 1, 2, 4][fhd & 3];
  const fcsBytes = fcsFlag === 0 ? singleSegment : 1 << fcsFlag;
  const pos = 5 + (singleSegment ? 0 : 1) + dictIdBytes;
  const headerLength = pos + fcsBytes;
  if (data.length < headerLength) throw new Error("zstd: truncated frame header");
  let size = 0;
  for (let i = fcsBytes - 1; i >= 0; i--) size = size * 256 + data[pos + i];
  const contentSize = fcsBytes === 0 ? null : fcsBytes === 2 ? size + 256 : size;
  return { contentSize, headerLength, checksum: ((fhd >> 2) & 1) === 1 };
}

/**
 * The Frame_Content_Size of the zstd frame starting `data`, or null when the header does not
 * carry it. Throws when `data` does not start with a zstd frame.
 */
export function frameContentSize(data: Uint8Array): number | null {
  return frameHeader(data).contentSize;
}

/** Compressed length of the frame starting `data`, found by walking its block headers. */
function frameLength(data: Uint8Array, header: FrameHeader): number {
  let pos = header.headerLength;
  for (;;) {
    if (pos + 3 > data.length) throw new Error("zstd: cannot decompress: truncated frame");
    const bh = data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16);
    const type = (bh >> 1) & 3;
    if (type === 3) throw new Error("zstd: cannot decompress: corrupt frame (reserved block type)");
    pos += 3 + (type === 1 ? 1 : bh >>> 3); // RLE blocks hold one byte
    if (bh & 1) break; // Last_Block
  }
  return pos + (header.checksum ? 4 : 0);
}
