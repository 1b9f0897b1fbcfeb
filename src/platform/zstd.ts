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
 * - SSYNC_NO_NATIVE_ZSTD=1 (read at import time) makes the default backend wasm; the
 *   `backend` option chooses per call.
 */
import zlib from "node:zlib";

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
  if (backendOf(options) === "wasm") return wasmOrThrow().compress(data, level);
  const out: Uint8Array = z.zstdCompressSync(data, {
    params: { [z.constants.ZSTD_c_compressionLevel]: level },
    pledgedSrcSize: data.length,
  });
  return out;
}

/** The content of one zstd frame; throws RangeError when it would exceed `maxSize` bytes. */
export function decompress(data: Uint8Array, maxSize: number, options?: ZstdOptions): Uint8Array {
  const backend = backendOf(options);
  const announced = frameContentSize(data);
  if (announced !== null && announced > maxSize) throw tooLarge(maxSize);
  let out: Uint8Array;
  try {
    if (backend === "wasm") {
      // Known size: the wasm library allocates exactly that; unknown: capped at maxSize.
      out = wasmOrThrow().decompress(data, { defaultHeapSize: Math.max(1, maxSize) });
    } else {
      const cap = Math.max(64, announced ?? Math.min(maxSize, 1 << 20));
      out = z.zstdDecompressSync(data, { maxOutputLength: Math.max(1, maxSize), chunkSize: cap });
    }
  } catch (e) {
    if ((e as { code?: string }).code === "ERR_BUFFER_TOO_LARGE") throw tooLarge(maxSize);
    throw new Error(`zstd: cannot decompress: ${(e as Error).message}`, { cause: e });
  }
  if (out.length > maxSize) throw tooLarge(maxSize);
  if (announced !== null && out.length !== announced) {
    throw new Error(`zstd: frame announced ${announced} bytes but held ${out.length}`);
  }
  return out;
}

function tooLarge(maxSize: number): RangeError {
  return Object.assign(new RangeError(`zstd: data decompresses to more than ${maxSize} bytes`), {
    code: "ERR_ZSTD_TOO_LARGE",
  });
}

/**
 * The Frame_Content_Size of the zstd frame starting `data` (RFC 8878 §3.1.1.1), or null
 * when the header does not carry it. Throws when `data` does not start with a zstd frame.
 */
export function frameContentSize(data: Uint8Array): number | null {
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
  let pos = 5 + (singleSegment ? 0 : 1) + dictIdBytes;
  if (fcsBytes === 0) return null;
  if (data.length < pos + fcsBytes) throw new Error("zstd: truncated frame header");
  let size = 0;
  for (let i = fcsBytes - 1; i >= 0; i--) size = size * 256 + data[pos + i];
  pos += fcsBytes;
  return fcsBytes === 2 ? size + 256 : size;
}
