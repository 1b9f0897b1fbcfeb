/**
 * --include / --exclude for a folder sync: globs (node:path matchesGlob, on Node and Deno
 * alike) against paths relative to the synced folder, "/"-separated.
 *
 * The rule (order-independent, unlike rsync's first match):
 * - a path is excluded when some --exclude matches it or one of its folders, and no --include
 *   matches it or one of its folders; an --include always wins over an --exclude;
 * - a pattern without a "/" is matched against each name along the path (`*.tmp` matches
 *   a/b.tmp, `cache` matches the folder a/cache and all below it); a pattern with a "/" is
 *   matched against the path from the top (`vms/*.img`; a leading "/" is ignored); a pattern
 *   ending in "/" matches folders only (`tmp/` excludes every folder named tmp, not a file).
 * - `**` crosses folders (`vms/**` = everything under vms).
 */
import nodePath from "node:path";

interface Pattern {
  readonly glob: string;
  /** Matched against each name (no "/" in it) instead of each leading part of the path. */
  readonly byName: boolean;
  readonly foldersOnly: boolean;
}

function parse(text: string): Pattern {
  const foldersOnly = text.endsWith("/");
  const glob = text.replace(/^\/+/, "").replace(/\/+$/, "");
  return { glob, byName: !glob.includes("/"), foldersOnly };
}

export class PathFilter {
  readonly #include: Pattern[];
  readonly #exclude: Pattern[];

  constructor(o: { include?: readonly string[]; exclude?: readonly string[] } = {}) {
    this.#include = (o.include ?? []).filter((p) => p !== "").map(parse);
    this.#exclude = (o.exclude ?? []).filter((p) => p !== "").map(parse);
  }

  /** No pattern at all: nothing is excluded. */
  get empty(): boolean {
    return this.#include.length === 0 && this.#exclude.length === 0;
  }

  /** Whether `path` (a file, or a folder when `folder`) is left out of the sync. */
  excludes(path: string, o: { folder?: boolean } = {}): boolean {
    return matchesAny(this.#exclude, path, o.folder === true) && !matchesAny(this.#include, path, o.folder === true);
  }

  /**
   * Whether nothing under the folder `path` can be synced, so the walk need not enter it:
   * only when it is excluded and no --include could bring back something below it.
   */
  prunes(folder: string): boolean {
    return this.#include.length === 0 && this.excludes(folder, { folder: true });
  }
}

/** Some pattern matches `path` itself or one of the folders leading to it. */
function matchesAny(patterns: readonly Pattern[], path: string, isFolder: boolean): boolean {
  if (patterns.length === 0) return false;
  const names = path.split("/");
  for (let i = 0; i < names.length; i++) {
    const folder = i < names.length - 1 || isFolder;
    const lead = names.slice(0, i + 1).join("/");
    for (const p of patterns) {
      if (p.foldersOnly && !folder) continue;
      if (nodePath.posix.matchesGlob(p.byName ? names[i] : lead, p.glob)) return true;
    }
  }
  return false;
}
