/**
 * A fixed pool of worker threads running scan jobs. `size: 0` runs jobs in-process, one at
 * a time: the sequential reference path that tests compare the parallel one against.
 *
 * Invariants:
 * - A worker runs one job at a time; jobs wait in FIFO order, except that refinement jobs
 *   (sub-digests, patch) pass the others: a round trip waits on each. The pool does not bound its
 *   queue: callers bound what they submit (their windows count requests and bytes).
 * - A worker that dies fails its job and every later job; the pool is then unusable.
 */
import { Worker } from "node:worker_threads";
import { availableParallelism } from "node:os";
import process from "node:process";
import { initZstd } from "../platform/zstd.ts";
import { ErrnoError } from "../util/errors.ts";
import { runJob } from "./run-job.ts";
import type { DiffJob, DiffResult, DigestJob, DigestResult, PatchJob, ScanJob, SubDigestJob } from "./scan-job.ts";

interface Pending {
  id: number;
  job: ScanJob;
  resolve: (r: DigestResult | DiffResult) => void;
  reject: (e: Error) => void;
}

/** How many workers by default: every core, at most 8. */
export function defaultWorkers(): number {
  const env = Number(process.env.SSYNC_WORKERS);
  if (Number.isInteger(env) && env >= 0) return env;
  return Math.max(1, Math.min(8, availableParallelism()));
}

export class WorkerPool implements AsyncDisposable {
  #idle: Worker[] = [];
  #all: Worker[] = [];
  #busy = new Map<Worker, Pending>();
  #queue: Pending[] = [];
  /** The first #urgent jobs of the queue are refinement jobs (FIFO among themselves). */
  #urgent = 0;
  #nextId = 1;
  #failed: Error | undefined;
  #inProcess: Promise<unknown> = Promise.resolve();
  readonly size: number;

  constructor(options: { size?: number } = {}) {
    this.size = options.size ?? defaultWorkers();
    for (let i = 0; i < this.size; i++) {
      const w = spawnWorker();
      w.unref();
      w.on("message", (m: { id: number; result?: DigestResult | DiffResult; error?: { message: string; code?: string } }) =>
        this.#done(w, m)
      );
      w.on("error", (e: Error) => this.#die(w, e));
      w.on("exit", (code: number) => this.#die(w, new Error(`scan worker exited with code ${code}`)));
      this.#all.push(w);
      this.#idle.push(w);
    }
  }

  digest(job: Omit<DigestJob, "kind">): Promise<DigestResult> {
    return this.#submit({ ...job, kind: "digest" }) as Promise<DigestResult>;
  }

  diff(job: Omit<DiffJob, "kind">): Promise<DiffResult> {
    return this.#submit({ ...job, kind: "diff" }) as Promise<DiffResult>;
  }

  /** Refinement: the destination's sub-digests of a run of blocks. */
  subDigests(job: Omit<SubDigestJob, "kind">): Promise<DigestResult> {
    return this.#submit({ ...job, kind: "sub-digests" }) as Promise<DigestResult>;
  }

  /** Refinement: the source's PATCH (or DATA) ops for a run of blocks, given the destination's sub-digests. */
  patch(job: Omit<PatchJob, "kind">): Promise<DiffResult> {
    return this.#submit({ ...job, kind: "patch" }) as Promise<DiffResult>;
  }

  #submit(job: ScanJob): Promise<DigestResult | DiffResult> {
    if (this.#failed) return Promise.reject(this.#failed);
    if (this.size === 0) {
      const run = this.#inProcess.then(async () => {
        await initZstd();
        return runJob(job);
      });
      this.#inProcess = run.catch(() => {});
      return run;
    }
    return new Promise((resolve, reject) => {
      const p = { id: this.#nextId++, job, resolve, reject };
      // Refinement jobs are small and a round trip waits on each: they go first.
      if (job.kind === "sub-digests" || job.kind === "patch") this.#queue.splice(this.#urgent++, 0, p);
      else this.#queue.push(p);
      this.#pump();
    });
  }

  #pump(): void {
    while (this.#idle.length > 0 && this.#queue.length > 0) {
      const w = this.#idle.pop()!;
      const p = this.#queue.shift()!;
      if (this.#urgent > 0) this.#urgent--;
      this.#busy.set(w, p);
      w.ref();
      w.postMessage({ id: p.id, job: p.job });
    }
  }

  #done(w: Worker, m: { id: number; result?: DigestResult | DiffResult; error?: { message: string; code?: string } }) {
    const p = this.#busy.get(w);
    if (!p || p.id !== m.id) return;
    this.#busy.delete(w);
    w.unref();
    this.#idle.push(w);
    if (m.error) p.reject(m.error.code ? new ErrnoError(m.error.code, m.error.message) : new Error(m.error.message));
    else p.resolve(m.result!);
    this.#pump();
  }

  #die(w: Worker, e: Error): void {
    if (this.#failed) return;
    this.#failed = e;
    for (const p of [...this.#busy.values(), ...this.#queue]) p.reject(e);
    this.#busy.clear();
    this.#queue = [];
    this.#urgent = 0;
    void w;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#failed ??= new Error("worker pool closed");
    for (const p of [...this.#busy.values(), ...this.#queue]) p.reject(this.#failed);
    this.#busy.clear();
    this.#queue = [];
    this.#urgent = 0;
    const all = this.#all.splice(0);
    for (const w of all) w.removeAllListeners("exit");
    await Promise.all(all.map((w) => w.terminate()));
  }
}

function spawnWorker(): Worker {
  // The single binary (scripts/build-binary) has no scan-worker.ts file: it embeds the bundled
  // worker as CommonJS source text here.
  const embedded = (globalThis as { ssyncScanWorkerSource?: unknown }).ssyncScanWorkerSource;
  if (typeof embedded === "string") return new Worker(embedded, { eval: true });
  return new Worker(new URL("./scan-worker.ts", import.meta.url));
}
