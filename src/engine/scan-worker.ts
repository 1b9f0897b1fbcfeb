/** Worker thread entry: runs scan jobs posted by WorkerPool, one at a time, in the order posted. */
import { parentPort } from "node:worker_threads";
import { initZstd } from "../platform/zstd.ts";
import { runJob, transferables } from "./run-job.ts";
import type { ScanJob } from "./scan-job.ts";

const port = parentPort;
if (!port) throw new Error("scan-worker must run in a worker thread");
const ready = initZstd();

/** The pool's shared arena (posted once, first): unpack payloads arrive as views of it. */
let arena: SharedArrayBuffer | undefined;

/**
 * The job running and those posted behind it (the pool posts up to WORKER_DEPTH): run one
 * after another and answered in the order posted, since they share this thread's read buffer
 * (run-job.ts) and the pool matches answers in order. run() never rejects.
 */
let running: Promise<void> = Promise.resolve();

port.on("message", (msg: { id: number; job: ScanJob } | { arena: SharedArrayBuffer }) => {
  if ("arena" in msg) {
    arena = msg.arena;
    return;
  }
  running = running.then(() => run(msg));
});

async function run(msg: { id: number; job: ScanJob }): Promise<void> {
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
}
