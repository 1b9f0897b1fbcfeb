/**
 * What --progress and -q/--quiet ask for. `--progress` takes an optional value the GNU way
 * (like `ls --color[=WHEN]`): `--progress` alone is the live line, `--progress=json` NDJSON
 * events; in `--progress json` the word is an argument, not the option's value.
 */
import { UsageError } from "../util/errors.ts";

/** auto: the line when stderr is a terminal and not --quiet; none: --no-progress. */
export type ProgressChoice = "auto" | "line" | "json" | "none";
export type ProgressFormat = "line" | "json";

/** cac gives true for `--progress`, the text after `=`, false for `--no-progress`. */
export function parseProgress(value: string | boolean | undefined): ProgressChoice {
  if (value === undefined) return "auto";
  if (value === false) return "none";
  if (value === true || value === "line") return "line";
  if (value === "json") return "json";
  throw new UsageError(`Invalid --progress=${value}: use --progress (a live line on stderr) or --progress=json (NDJSON events on stderr)`);
}

/** What to show: an explicit --progress wins over --quiet; auto is the line on a terminal only. */
export function progressFormat(choice: ProgressChoice, o: { quiet: boolean; isTTY: boolean }): ProgressFormat | undefined {
  switch (choice) {
    case "line":
    case "json":
      return choice;
    case "none":
      return undefined;
    case "auto":
      return o.isTTY && !o.quiet ? "line" : undefined;
    default:
      throw new Error(`unhandled progress choice ${choice satisfies never}`);
  }
}

/**
 * cac declares `--progress [format]`, whose parser would take the next argument as its value
 * (`--progress vm.img host:` would lose vm.img): a bare `--progress` (before `--`) becomes
 * `--progress=line`, so only a value attached with `=` is ever the option's.
 */
export function attachProgressValue(argv: readonly string[]): string[] {
  const end = argv.indexOf("--");
  return argv.map((a, i) => (a === "--progress" && (end < 0 || i < end) ? "--progress=line" : a));
}
