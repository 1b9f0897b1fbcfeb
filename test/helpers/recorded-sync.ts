/**
 * A local sync through the real engine with everything recorded: the client and server
 * sessions over `memoryPair()`, the client's end wrapped in a RecordingChannel and both
 * stores (real files) in RecordingStorage.
 */
import assert from "node:assert/strict";
import type { HashAlgorithm } from "../../protocol/constants.ts";
import type { WorkerPool } from "../../src/engine/worker-pool.ts";
import { runClient, type SyncReport } from "../../src/session/client-session.ts";
import { memoryPair } from "../../src/session/memory-pair.ts";
import { serveSession, type ServerSessionResult } from "../../src/session/server-session.ts";
import { openDestination } from "../../src/storage/open-destination.ts";
import { openSource } from "../../src/storage/open-source.ts";
import { RecordingChannel } from "./recording-channel.ts";
import { RecordingStorage } from "./recording-storage.ts";

export interface RecordedSync {
  /** The client's end: push → `sent` are the source's requests; pull → the destination's. */
  wire: RecordingChannel;
  source: RecordingStorage;
  destination: RecordingStorage;
  report: SyncReport;
  server: ServerSessionResult;
}

/**
 * Syncs `src` into `dst` through the real engine: push (the client is the source, the
 * server writes `dst`) or pull (the server reads `src`, the client writes `dst`). Fails
 * unless the server committed.
 */
export async function recordedSync(
  src: string,
  dst: string,
  /** `inProcess: false`: the client's end says its peer is not in this process (as over a link). */
  options: { mode: "push" | "pull"; blockSize: number; pool: WorkerPool; ffi?: boolean; hash?: HashAlgorithm; refine?: boolean; inProcess?: false },
): Promise<RecordedSync> {
  const { mode, ffi } = options;
  const [clientEnd, serverEnd] = memoryPair();
  const wire = new RecordingChannel(clientEnd, "inProcess" in options ? { inProcess: options.inProcess } : {});
  const local = new RecordingStorage(mode === "push" ? await openSource(src, { ffi }) : await openDestination(dst, { create: true, ffi }));
  let remote: RecordingStorage | undefined;
  try {
    const server = serveSession(serverEnd, {
      pool: options.pool,
      open: async (req) => {
        const store = req.mode === "push" ? await openDestination(dst, { create: true, readOnly: req.dryRun, ffi }) : await openSource(src, { ffi });
        remote = new RecordingStorage(store);
        return remote;
      },
    });
    const report = await runClient(wire, local, {
      mode,
      name: mode === "push" ? dst : src,
      blockSize: options.blockSize,
      hash: options.hash ?? "hmac-sha256",
      dryRun: false,
      pool: options.pool,
      refine: options.refine,
      allowShrink: true, // the reference cuts a destination to the source's size, data or not
    }).finally(() => server);
    const result = await server;
    assert.equal(result.error, undefined, "server session error");
    assert.ok(result.committed && remote, "server committed");
    return mode === "push"
      ? { wire, source: local, destination: remote, report, server: result }
      : { wire, source: remote, destination: local, report, server: result };
  } finally {
    await local[Symbol.asyncDispose]();
  }
}
