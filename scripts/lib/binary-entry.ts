/**
 * Entry of the single-file bundle (scripts/build-binary): makes the embedded scan-worker
 * source visible to WorkerPool and the build's commit to --version, then runs the CLI.
 * src/cli/main.ts does not run itself in the bundle (the build defines `import.meta.main` as
 * false).
 *
 * Invariant: the binary never exits 0 unless `main` returned 0. A Node SEA whose ESM main
 * awaits a promise that can no longer settle exits silently with code 0; the exit hook
 * turns that into a message and code 1.
 */
import process from "node:process";
import { main } from "../../src/cli/main.ts";

/** Replaced at build time with the bundled scan worker (CommonJS source text)... */
declare const SSYNC_SCAN_WORKER_SOURCE: string;
/** ...and with the commit built from ("unknown" outside a git checkout), for --version. */
declare const SSYNC_BUILD_COMMIT: string;

(globalThis as { ssyncScanWorkerSource?: string }).ssyncScanWorkerSource = SSYNC_SCAN_WORKER_SOURCE;
(globalThis as { ssyncBuildCommit?: string }).ssyncBuildCommit = SSYNC_BUILD_COMMIT;

let finished = false;
process.on("exit", () => {
  if (finished) return;
  console.error(
    "ssync: internal error: stopped before the command finished (a promise never settled)",
  );
  process.exitCode = 1;
});
const code = await main(process.argv.slice(2));
finished = true;
process.exitCode = code;
