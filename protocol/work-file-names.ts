/**
 * The names of ssync's own work files (spec §8): a file's redo journal `.NAME.ssync-journal`,
 * a new file's `.NAME.ssync-partial`, their fallback `.ssync-<kind>-<32 hex digits>` for a
 * NAME too long for the suffix, and lock files `….ssync-lock`. No peer may name one: a
 * listener never opens, creates or lists them, and a client never takes one from a LIST.
 */

/** True for a name ssync uses for its own files (journals, partial files, lock files). */
export function isWorkFileName(base: string): boolean {
  // Case-insensitive: on a case-folding folder .X.SSYNC-JOURNAL names the journal too.
  return /^\..*\.ssync-(journal|partial)$/i.test(base) || /^\.ssync-(journal|partial)-[0-9a-f]{32}$/i.test(base) ||
    /\.ssync-lock$/i.test(base);
}
