/**
 * `ssync --version` (-V): ssync's version (package.json), the runtime running it, and the git
 * commit of the code: embedded by scripts/build-binary in the single binary; from source, the
 * commit of the checkout holding this file when it is one, else "unknown".
 */
import pkg from "../../package.json" with { type: "json" };
import { platform } from "../platform/platform.ts";
import { checkoutCommit } from "./checkout-commit.ts";

export function versionText(): string {
  const runtime = `${platform.runtime} ${platform.version}${platform.singleBinary ? " (single binary)" : ""}`;
  return `ssync ${pkg.version} (${runtime}, commit ${buildCommit()})`;
}

/** Set by the single binary's entry (scripts/lib/binary-entry.ts) from the build's commit. */
function buildCommit(): string {
  const embedded = (globalThis as { ssyncBuildCommit?: string }).ssyncBuildCommit;
  if (embedded) return embedded;
  if (platform.singleBinary) return "unknown";
  return checkoutCommit(new URL("../..", import.meta.url)) ?? "unknown";
}
