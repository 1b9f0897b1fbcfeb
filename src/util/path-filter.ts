/**
 * --include / --exclude of a folder sync: rules in the order given, matched against paths
 * relative to the synced folder ("/"-separated), rsync's way:
 *
 * 1. the FIRST rule that matches an entry decides (an --include keeps it, an --exclude leaves
 *    it out); no rule matches: kept. So `--include 'keep.tmp' --exclude '*.tmp'` keeps
 *    keep.tmp, and the reverse order excludes it too;
 * 2. an excluded folder is not entered: nothing below it is synced, listed or deleted, whatever
 *    a later rule says (to keep only *.img at any depth: `--include '*\/' --include '*.img'
 *    --exclude '*'`);
 * 3. a pattern without "/" (a trailing "/" aside) is matched against the entry's name, at any
 *    depth (`*.tmp` matches a/b.tmp); a pattern with a "/" is matched against the whole path
 *    from the top (`vms/*.img` matches vms/a.img, not x/vms/a.img; a leading "/" only says
 *    so); a pattern ending in "/" matches folders only (`tmp/`);
 * 4. globs (compileGlob): `*` any run of characters but "/", `?` one character but "/",
 *    `[abc]`, `[a-z]`, `[!a-z]` / `[^a-z]` a class (never "/"), `**` any run including "/"
 *    (`**\/` also none: `**\/cache` matches cache at the top), `\` quotes the next character.
 *    Names starting with "." are matched like any other (no hidden-file exception, as rsync).
 */
import { UsageError } from "./errors.ts";

export interface FilterRule {
  readonly type: "include" | "exclude";
  readonly pattern: string;
}

interface Rule {
  readonly include: boolean;
  readonly regex: RegExp;
  /** Matched against the whole path, not the name. */
  readonly byPath: boolean;
  readonly foldersOnly: boolean;
}

const SPECIAL = /[.*+?^${}()|[\]\\/]/g;

/** The regular expression of a glob (the rules above), anchored at both ends. */
export function compileGlob(glob: string): RegExp {
  let out = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === "\\" && i + 1 < glob.length) {
      out += glob[++i].replace(SPECIAL, "\\$&");
    } else if (c === "*" && glob[i + 1] === "*") {
      const start = i === 0 || glob[i - 1] === "/";
      i++;
      while (glob[i + 1] === "*") i++;
      if (start && glob[i + 1] === "/") {
        out += "(?:.*/)?";
        i++;
      } else {
        out += ".*";
      }
    } else if (c === "*") {
      out += "[^/]*";
    } else if (c === "?") {
      out += "[^/]";
    } else if (c === "[") {
      const cls = charClass(glob, i);
      if (cls === undefined) out += "\\[";
      else {
        out += cls.regex;
        i = cls.end;
      }
    } else {
      out += c.replace(SPECIAL, "\\$&");
    }
  }
  return new RegExp(`^${out}$`, "s");
}

/** The class opened at `glob[at]` ("["): its regex and the index of its "]", or undefined when unclosed. */
function charClass(glob: string, at: number): { regex: string; end: number } | undefined {
  let i = at + 1;
  const negated = glob[i] === "!" || glob[i] === "^";
  if (negated) i++;
  let body = "";
  let first = true;
  for (; i < glob.length; i++) {
    const c = glob[i];
    if (c === "]" && !first) return { regex: negated ? `[^/${body}]` : `(?!/)[${body}]`, end: i };
    first = false;
    if (c === "\\" && i + 1 < glob.length) body += "\\" + glob[++i];
    else if (c === "-") body += "-";
    else body += c.replace(/[\]\\^[]/g, "\\$&");
  }
  return undefined;
}

function compile(r: FilterRule): Rule {
  if (r.pattern === "" || r.pattern === "/") throw new UsageError(`--${r.type} needs a pattern (got ${JSON.stringify(r.pattern)})`);
  const foldersOnly = r.pattern.endsWith("/");
  const anchored = r.pattern.startsWith("/");
  const glob = r.pattern.replace(/^\/+/, "").replace(/\/+$/, "");
  return { include: r.type === "include", regex: compileGlob(glob), byPath: anchored || glob.includes("/"), foldersOnly };
}

export class PathFilter {
  readonly #rules: Rule[];

  constructor(rules: readonly FilterRule[] = []) {
    this.#rules = rules.map(compile);
  }

  /** No rule at all: nothing is excluded. */
  get empty(): boolean {
    return this.#rules.length === 0;
  }

  /**
   * Whether the entry at `path` (a folder when `folder`) is left out: the first matching rule
   * decides. Its folders are not looked at: an excluded folder is never entered (rule 2).
   */
  excludes(path: string, o: { folder?: boolean } = {}): boolean {
    const name = path.slice(path.lastIndexOf("/") + 1);
    for (const r of this.#rules) {
      if (r.foldersOnly && o.folder !== true) continue;
      if (r.regex.test(r.byPath ? path : name)) return !r.include;
    }
    return false;
  }
}

/**
 * The rules of a command line in their order (cac keeps --include and --exclude apart):
 * `argv` is scanned for them; the values cac parsed must be those, else (a config file's,
 * say) they follow as includes, then excludes.
 */
export function filterRules(argv: readonly string[], parsed: { include: readonly string[]; exclude: readonly string[] }): FilterRule[] {
  const rules: FilterRule[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--") break;
    for (const type of ["include", "exclude"] as const) {
      if (a === `--${type}` && i + 1 < argv.length) rules.push({ type, pattern: argv[++i] });
      else if (a.startsWith(`--${type}=`)) rules.push({ type, pattern: a.slice(type.length + 3) });
    }
  }
  const same = (type: FilterRule["type"], want: readonly string[]) => {
    const got = rules.filter((r) => r.type === type).map((r) => r.pattern);
    return got.length === want.length && got.every((p, i) => p === want[i]);
  };
  if (same("include", parsed.include) && same("exclude", parsed.exclude)) return rules;
  return [...parsed.include.map((pattern) => ({ type: "include" as const, pattern })), ...parsed.exclude.map((pattern) => ({ type: "exclude" as const, pattern }))];
}
