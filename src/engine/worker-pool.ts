/**
 * A fixed pool of worker threads running scan jobs. `size: 0` runs jobs in-process, one at
 * a time: the sequential reference path that tests compare the parallel one against.
 *
 * Invariants:
 * - A worker runs one job at a time, in the order posted, and has at most WORKER_DEPTH of them
 *   posted; the others wait in the pool in FIFO order, except that refinement jobs
 *   (sub-digests, patch) pass the others: a round trip waits on each. The pool does not bound its
 *   queue: callers bound what they submit (their windows count requests and bytes).
 * - Bytes go to a worker through the pool's shared arena, never inside a message: Deno's
 *   node:worker_threads copies a message's buffers to a worker at a few MB/s (measured:
 *   ~200 ms per MiB), while a SharedArrayBuffer posted once is shared for real. An unpack
 *   job copies its payload into one of ARENA_SLOTS slots (the one copy on the destination's
 *   side) and holds it until the job settles; a job finding no free slot waits for one.
 *   Results come back by transfer, which is fast on both runtimes.
 * - A worker that dies fails its job and every later job; the pool is then unusable.
 * - A digest, diff or unpack job reading at most INLINE_JOB_BYTES (its spans', not the holes
 *   between them) runs on the calling thread:
 *   for a small file the worker round trip (two messages, their copies, a wake-up) costs
 *   far more than hashing a few KiB. Same runJob, same results; the read is a pread of at
 *   most INLINE_JOB_BYTES (a few µs from the page cache).
 */
import { Worker } from "node:worker_threads";
import { availableParallelism } from "node:os";
import process from "node:process";
import { initZstd } from "../platform/zstd.ts";
import { ErrnoError } from "../util/errors.ts";
import { runJob } from "./run-job.ts";
import { ProtocolError } from "../../protocol/codec.ts";
import { MAX_DATA_LENGTH } from "../../protocol/constants.ts";
import type { DiffJob, DiffResult, DigestJob, DigestResult, FanDiffResult, JobResult, PatchJob, ScanJob, SubDigestJob, UnpackJob, UnpackResult } from "./scan-job.ts";

/** Jobs this long or shorter run on the calling thread (see the invariants). */
export const INLINE_JOB_BYTES = 64 * 1024;

/**
 * Jobs posted to one worker at a time: the next one waits in the worker's own inbox, so the
 * worker starts it as it answers the last, not after a round trip through the pool's thread.
 */
export const WORKER_DEPTH = 2;

/**
 * A worker's young generation, in MiB (V8's default is tens). A job's buffers are small
 * objects in V8's heap holding MiB outside it (node:zlib's output, a decompressed block), and
 * V8 frees those only when it collects the objects: with the default, a worker that
 * compresses collected once per several dozen MiB of dead buffers, each thread's allocator
 * kept that much, and a listener serving a pull with --compress=always peaked at ~255 MB
 * (issue 9 bounds a side at 200 MiB). A small young generation collects every few MiB;
 * the same pull peaked at 185–193 MB, its CPU time within noise.
 */
export const WORKER_YOUNG_GENERATION_MB = 2;

/** Payloads in workers at once (each slot holds one, up to MAX_DATA_LENGTH bytes). */
export const ARENA_SLOTS = 8;

interface Pending {
  id: number;
  job: ScanJob;
  resolve: (r: JobResult) => void;
  reject: (e: Error) => void;
}

/** How many workers by default: every core, at most 8. */
export function defaultWorkers(): number {
  const env = Number(process.env.SSYNC_WORKERS);
  if (Number.isInteger(env) && env >= 0) return env;
  return Math.max(1, Math.min(8, availableParallelism()));
}

export class WorkerPool implements AsyncDisposable {
  #all: Worker[] = [];
  /** Jobs posted to each worker and not answered yet, in the order posted (≤ WORKER_DEPTH). */
  #posted = new Map<Worker, Pending[]>();
  #queue: Pending[] = [];
  /** The first #urgent jobs of the queue are refinement jobs (FIFO among themselves). */
  #urgent = 0;
  #nextId = 1;
  #failed: Error | undefined;
  #inProcess: Promise<unknown> = Promise.resolve();
  /** Shared with every worker; slot i is [i·MAX_DATA_LENGTH, (i+1)·MAX_DATA_LENGTH). */
  #arena: Uint8Array | undefined;
  #freeSlots: number[] = [];
  #slotWaiters: { resolve: (slot: number) => void; reject: (e: Error) => void }[] = [];
  readonly size: number;

  constructor(options: { size?: number } = {}) {
    this.size = options.size ?? defaultWorkers();
    if (this.size > 0) {
      // Virtual until touched: a slot's pages become resident once a payload that long used it.
      this.#arena = new Uint8Array(new SharedArrayBuffer(ARENA_SLOTS * MAX_DATA_LENGTH));
      this.#freeSlots = Array.from({ length: ARENA_SLOTS }, (_, i) => i);
    }
    for (let i = 0; i < this.size; i++) {
      const w = spawnWorker();
      w.postMessage({ arena: this.#arena!.buffer });
      w.unref();
      w.on("message", (m: WorkerReply) =>
        this.#done(w, m)
      );
      w.on("error", (e: Error) => this.#die(w, e));
      w.on("exit", (code: number) => this.#die(w, new Error(`scan worker exited with code ${code}`)));
      this.#all.push(w);
      this.#posted.set(w, []);
    }
  }

  /**
   * Whether a digest, diff or unpack job reading `length` bytes runs on a worker thread (not inline,
   * not a pool of size 0; refinement jobs go to a worker whatever their length): the pool's one
   * rule for it. Only such a job carries read-ahead advice: its fadvise calls block the thread
   * making them (~0.4 ms per MiB here), which must not be the session's.
   */
  onWorker(length: number): boolean {
    return this.size > 0 && length > INLINE_JOB_BYTES;
  }

  digest(job: Omit<DigestJob, "kind">): Promise<DigestResult> {
    return this.#submit({ ...job, kind: "digest" }) as Promise<DigestResult>;
  }

  diff(job: Omit<DiffJob, "kind">): Promise<FanDiffResult> {
    return this.#submit({ ...job, kind: "diff" }) as Promise<FanDiffResult>;
  }

  /** Refinement: the destination's sub-digests of a run of blocks. */
  subDigests(job: Omit<SubDigestJob, "kind">): Promise<DigestResult> {
    return this.#submit({ ...job, kind: "sub-digests" }) as Promise<DigestResult>;
  }

  /** Refinement: the source's PATCH (or DATA) ops for a run of blocks, given the destination's sub-digests. */
  patch(job: Omit<PatchJob, "kind">): Promise<DiffResult> {
    return this.#submit({ ...job, kind: "patch" }) as Promise<DiffResult>;
  }

  /** The payload is copied (into the arena); the caller keeps its own. */
  async unpack(job: Omit<UnpackJob, "kind" | "payload" | "arenaAt" | "payloadLength"> & { payload: Uint8Array }): Promise<UnpackResult> {
    if (!this.onWorker(job.length)) return await this.#submit({ ...job, kind: "unpack" }) as UnpackResult;
    if (job.payload.length > MAX_DATA_LENGTH) throw new RangeError(`unpack payload of ${job.payload.length} bytes`);
    const slot = await this.#takeSlot();
    try {
      const at = slot * MAX_DATA_LENGTH;
      this.#arena!.set(job.payload, at);
      const { payload, ...rest } = job;
      return await this.#submit({ ...rest, kind: "unpack", payload: undefined, arenaAt: at, payloadLength: payload.length }) as UnpackResult;
    } finally {
      this.#giveSlot(slot);
    }
  }

  #takeSlot(): Promise<number> {
    if (this.#failed) return Promise.reject(this.#failed);
    const free = this.#freeSlots.pop();
    if (free !== undefined) return Promise.resolve(free);
    return new Promise((resolve, reject) => this.#slotWaiters.push({ resolve, reject }));
  }

  #giveSlot(slot: number): void {
    const next = this.#slotWaiters.shift();
    if (next) next.resolve(slot);
    else this.#freeSlots.push(slot);
  }

  #submit(job: ScanJob): Promise<JobResult> {
    if (this.#failed) return Promise.reject(this.#failed);
    if (this.size === 0) {
      const run = this.#inProcess.then(async () => {
        await initZstd();
        return runJob(job);
      });
      this.#inProcess = run.catch(() => {});
      return run;
    }
    if (!this.onWorker(bytesToRead(job)) && job.kind !== "sub-digests" && job.kind !== "patch") return inline(job);
    return new Promise((resolve, reject) => {
      const p = { id: this.#nextId++, job, resolve, reject };
      // Refinement jobs are small and a round trip waits on each: they go first.
      if (job.kind === "sub-digests" || job.kind === "patch") this.#queue.splice(this.#urgent++, 0, p);
      else this.#queue.push(p);
      this.#pump();
    });
  }

  #pump(): void {
    // Idle workers first, then each one's next job: no worker gets two while another has none.
    for (let depth = 0; depth < WORKER_DEPTH && this.#queue.length > 0; depth++) {
      for (const [w, posted] of this.#posted) {
        if (posted.length > depth) continue;
        const p = this.#queue.shift();
        if (!p) return;
        if (this.#urgent > 0) this.#urgent--;
        posted.push(p);
        w.ref();
        w.postMessage({ id: p.id, job: p.job });
      }
    }
  }

  #done(w: Worker, m: WorkerReply) {
    const posted = this.#posted.get(w);
    // A worker answers its jobs in the order they were posted (scan-worker.ts).
    if (!posted || posted.length === 0 || posted[0].id !== m.id) return;
    const p = posted.shift()!;
    if (posted.length === 0) w.unref();
    if (m.error) p.reject(rebuildError(m.error));
    else p.resolve(m.result!);
    this.#pump();
  }

  #die(w: Worker, e: Error): void {
    if (this.#failed) return;
    this.#failed = e;
    for (const p of [...this.#takePosted(), ...this.#queue]) p.reject(e);
    for (const waiter of this.#slotWaiters.splice(0)) waiter.reject(e);
    this.#queue = [];
    this.#urgent = 0;
    void w;
  }

  /** Every job posted and not answered, removed. */
  #takePosted(): Pending[] {
    return [...this.#posted.values()].flatMap((posted) => posted.splice(0));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#failed ??= new Error("worker pool closed");
    for (const p of [...this.#takePosted(), ...this.#queue]) p.reject(this.#failed);
    for (const waiter of this.#slotWaiters.splice(0)) waiter.reject(this.#failed);
    this.#queue = [];
    this.#urgent = 0;
    const all = this.#all.splice(0);
    for (const w of all) w.removeAllListeners("exit");
    await Promise.all(all.map((w) => w.terminate()));
  }
}

/** What a job reads (or unpacks): a job of spans reads only them, not the holes between. */
function bytesToRead(job: ScanJob): number {
  return (job.kind === "diff" || job.kind === "digest") && job.spans ? job.spans.reduce((n, s) => n + s.length, 0) : job.length;
}

/** A small job on this thread (runJob keeps no view of its read buffer past its result). */
async function inline(job: ScanJob): Promise<JobResult> {
  await initZstd();
  return await runJob(job);
}

type WorkerReply = { id: number; result?: JobResult; error?: { message: string; code?: string; name?: string } };

/** A worker's failure as the class the main thread would have thrown (errno, protocol, other). */
function rebuildError(e: { message: string; code?: string; name?: string }): Error {
  if (e.code) return new ErrnoError(e.code, e.message);
  if (e.name === "ProtocolError") return new ProtocolError(e.message);
  return new Error(e.message);
}

function spawnWorker(): Worker {
  // The single binary (scripts/build-binary) has no scan-worker.ts file: it embeds the bundled
  // worker as CommonJS source text here.
  const embedded = (globalThis as { ssyncScanWorkerSource?: unknown }).ssyncScanWorkerSource;
  const opts = { resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB } };
  if (typeof embedded === "string") return new Worker(embedded, { eval: true, ...opts });
  return new Worker(new URL("./scan-worker.ts", import.meta.url), opts);
}
