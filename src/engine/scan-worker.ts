/** Worker thread entry: runs scan jobs posted by WorkerPool, one at a time. */
import { parentPort } from "node:worker_threads";
import { initZstd } from "../platform/zstd.ts";
import { runJob, transferables } from "./run-job.ts";
import type { ScanJob } from "./scan-job.ts";

const port = parentPort;
if (!port) throw new Error("scan-worker must run in a worker thread");
const ready = initZstd();

port.on("message", async (msg: { id: number; job: ScanJob }) => {
  try {
    await ready;
    const result = await runJob(msg.job);
    port.postMessage({ id: msg.id, result }, transferables(result));
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    port.postMessage({ id: msg.id, error: { message: err.message, code: err.code, name: err.name } });
  }
});
