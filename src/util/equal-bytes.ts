/** True when both byte arrays hold the same bytes (roots and digests: not secret-dependent). */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
