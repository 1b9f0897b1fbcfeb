// Stand-in for "@bokuweb/zstd-wasm" in the bundle: the same API, with the .wasm embedded
// (esbuild's binary loader) instead of read from disk next to the package. "zstd-wasm-dist/"
// is the package's dist/common folder (see build-binary.mjs): its package.json exports hides it.
import { Module, waitInitialized } from "zstd-wasm-dist/module.js";
import wasm from "zstd-wasm-dist/zstd.wasm";

export async function init() {
  Module["init"](wasm);
  await waitInitialized();
}
export * from "zstd-wasm-dist/simple/decompress.js";
export * from "zstd-wasm-dist/simple/compress.js";
export * from "zstd-wasm-dist/simple/decompress_using_dict.js";
export * from "zstd-wasm-dist/simple/compress_using_dict.js";
