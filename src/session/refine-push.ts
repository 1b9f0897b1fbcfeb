/**
 * Push, the client (source): refining a run of blocks the destination holds with other data
 * (spec §5.8).
 *
 * 1. Wait for room in the DATA window for everything the run may cost: the REFINE, and the
 *    one DATA or PATCH it becomes (its header, masks and at most the run's bytes). That wait
 *    is the back-pressure: diffRange emits no further op meanwhile.
 * 2. REFINE → SUB_DIGESTS (checked against the run asked for).
 * 3. A patch job reads the run again and finds the pages that differ; their op is sent
 *    within the room already held (so refinement can never wait on the window it holds).
 * 4. The room is released once that op is acknowledged (or the refinement fails).
 */
import { ProtocolError } from "../../protocol/codec.ts";
import { HEADER_SIZE, SUB_BLOCK_SIZE } from "../../protocol/constants.ts";
import { countOp, patchOps } from "../engine/refine.ts";
import { changedBytes, type RefinePolicy } from "../engine/refine-policy.ts";
import type { JobOp } from "../engine/scan-job.ts";
import type { SideContext } from "../engine/side-context.ts";
import type { ByteWindow } from "../util/byte-window.ts";
import type { ClientConnection } from "./client-connection.ts";
import { opMessage } from "./refine-wire.ts";

export async function startRefine(
  conn: ClientConnection,
  ctx: SideContext,
  run: { offset: number; length: number },
  o: {
    window: ByteWindow;
    dryRun: boolean;
    zstdLevel: number;
    policy?: RefinePolicy;
    /** Each op as it goes out, with the level its patch job ran at (CompressPolicy.sentOp). */
    sent?: (op: JobOp, level: number) => void;
  },
): Promise<{ done: Promise<void> }> {
  const bytes = 2 * HEADER_SIZE + 2 * Math.ceil(run.length / SUB_BLOCK_SIZE / 8) + run.length;
  await o.window.acquire(bytes, ctx.signal);
  const work = async () => {
    try {
      const reply = await conn.request<"REFINE">({ type: "REFINE", offset: run.offset, length: run.length });
      if (reply.offset !== run.offset || reply.length !== run.length) {
        throw new ProtocolError(`SUB_DIGESTS [${reply.offset}, ${reply.offset + reply.length}) does not answer REFINE at ${run.offset}`);
      }
      const ops = await patchOps(ctx, { ...run, dst: reply.digests }, { zstdLevel: o.zstdLevel, dryRun: o.dryRun });
      o.policy?.learn(run.length, ops.reduce((n, op) => n + changedBytes(op), 0));
      const acks: Promise<unknown>[] = [];
      for (const op of ops) {
        if (op.kind === "refine") throw new Error("Cannot refine: a patch job asked to refine again");
        countOp(ctx.stats, op, ctx.blockSize);
        o.sent?.(op, o.zstdLevel);
        const m = opMessage(op);
        acks.push(m.type === "PATCH" ? conn.request<"PATCH">(m) : m.type === "DATA" ? conn.request<"DATA">(m) : conn.request<"ZERO">(m));
      }
      await Promise.all(acks);
    } finally {
      o.window.release(bytes);
    }
  };
  // Wrapped: an async function would adopt the promise and wait for the whole refinement.
  return { done: work() };
}
