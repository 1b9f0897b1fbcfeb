/**
 * Entry of the single-file bundle (scripts/build-binary): makes the embedded scan-worker
 * source visible to WorkerPool, then runs the CLI. src/cli/main.ts does not run itself in
 * the bundle (the build defines `import.meta.main` as false).
 */
import process from "node:process";
import { main } from "../../src/cli/main.ts";

/** Replaced at build time with the bundled scan worker (CommonJS source text). */
declare const SSYNC_SCAN_WORKER_SOURCE: string;

(globalThis as { ssyncScanWorkerSource?: string }).ssyncScanWorkerSource = SSYNC_SCAN_WORKER_SOURCE;
process.exitCode = await main(process.argv.slice(2));
