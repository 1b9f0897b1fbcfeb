/** Worker thread entry: runs scan jobs posted by WorkerPool, one at a time. */
import { parentPort } from "node:worker_threads";
import { initZstd } from "../platform/zstd.ts";
import { runJob, transferables } from "./run-job.ts";
import type { ScanJob } from "./scan-job.ts";

const port = parentPort;
if (!port) throw new Error("scan-worker must run in a worker thread");
const ready = initZstd();

/** The pool's shared arena (posted once, first): unpack payloads arrive as views of it. */
let arena: SharedArrayBuffer | undefined;

port.on("message", async (msg: { id: number; job: ScanJob } | { arena: SharedArrayBuffer }) => {
  if ("arena" in msg) {
    arena = msg.arena;
    return;
  }
  try {
    await ready;
    const job = msg.job;
    if (job.kind === "unpack" && job.arenaAt !== undefined) {
      job.payload = new Uint8Array(arena!, job.arenaAt, job.payloadLength);
    }
    const result = await runJob(job);
    port.postMessage({ id: msg.id, result }, transferables(result));
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    port.postMessage({ id: msg.id, error: { message: err.message, code: err.code, name: err.name } });
  }
});
