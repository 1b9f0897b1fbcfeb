/**
 * The worker pool of a process that runs a network command (push, pull, folder push/pull,
 * fan-out, listen): the one place that says such a process tunes its allocator first
 * (platform/malloc-tuning.ts: each side of a network sync is its own process, with room under
 * 200 MiB). `ssync sync` makes a plain WorkerPool: both its sides share one process.
 */
import { WorkerPool } from "../engine/worker-pool.ts";
import { tuneMalloc } from "../platform/malloc-tuning.ts";

export function networkPool(): WorkerPool {
  tuneMalloc();
  return new WorkerPool();
}
