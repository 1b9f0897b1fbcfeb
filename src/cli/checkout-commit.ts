/** The git commit of a checkout: what `ssync --version` says from source, and what scripts/build-binary embeds. */
import { spawnSync } from "node:child_process";
import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";

/**
 * The commit checked out at `dir`, "-dirty" when tracked files differ from it; undefined when
 * `dir` is not the top of a git work tree (an npm install inside some other repository is not
 * that repository's code) or git is missing.
 */
export function checkoutCommit(dir: URL): string | undefined {
  let top: string;
  try {
    top = realpathSync(fileURLToPath(dir));
  } catch {
    return undefined;
  }
  const git = (...args: string[]) => {
    const r = spawnSync("git", ["-C", top, ...args], { encoding: "utf8", timeout: 5000 });
    return r.status === 0 ? r.stdout.trim() : undefined;
  };
  const root = git("rev-parse", "--show-toplevel");
  if (root === undefined || safeRealpath(root) !== top) return undefined;
  const commit = git("rev-parse", "--short=12", "HEAD");
  if (commit === undefined) return undefined;
  return git("status", "--porcelain", "--untracked-files=no") === "" ? commit : `${commit}-dirty`;
}

function safeRealpath(p: string): string | undefined {
  try {
    return realpathSync(p);
  } catch {
    return undefined;
  }
}
