/**
 * "Did you mean …?" for a mistyped command, option or config key: the closest candidate by
 * edit distance (Damerau–Levenshtein, optimal string alignment: a swap of two neighbours
 * counts one), when it is close enough to be the likely intent.
 */

/** Edits (insert, delete, substitute, swap neighbours) that turn `a` into `b`. */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/**
 * The candidate nearest to `word` (case-insensitive), or undefined when none is within a third
 * of the word's length (at least 1, at most 3 edits) and none starts with it.
 */
export function closest(word: string, candidates: Iterable<string>): string | undefined {
  const w = word.toLowerCase();
  const limit = Math.min(3, Math.max(1, Math.floor(w.length / 3)));
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(w, c.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [c, d];
  }
  if (best !== undefined && bestDistance <= limit) return best;
  const prefixed = [...candidates].filter((c) => w.length >= 2 && c.toLowerCase().startsWith(w));
  return prefixed.length === 1 ? prefixed[0] : undefined;
}

/** "; did you mean X?" or "" — the tail of an error message. */
export function didYouMean(word: string, candidates: Iterable<string>, show: (c: string) => string = (c) => c): string {
  const c = closest(word, candidates);
  return c === undefined ? "" : `; did you mean ${show(c)}?`;
}
