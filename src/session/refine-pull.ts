/**
 * Pull: refinement inside a READ_DIFF stream (spec §5.8).
 *
 * - refineInStream (the server, source): sends REFINE with the stream's cookie, waits for
 *   the client's SUB_DIGESTS (RefineRequests), then sends the differing pages (PATCH or
 *   DATA). The stream sends nothing else meanwhile, so its replies still ascend; while it
 *   waits the session is idle unless other work runs (a client that never answers is
 *   dropped by the idle timeout).
 * - StreamRefines (the client, destination): answers the REFINEs of one stream, one at a
 *   time, each checked at once: whole blocks of this stream's range, at or after every
 *   reply so far, not written or refined before, not zero here (DestinationWriter.refine).
 */
import { encode, ProtocolError } from "../../protocol/codec.ts";
import type { RefineMessage } from "../../protocol/messages.ts";
import type { DestinationWriter } from "../engine/destination-side.ts";
import { countOp, patchOps, subDigestRange } from "../engine/refine.ts";
import { changedBytes, type RefinePolicy } from "../engine/refine-policy.ts";
import type { JobOp } from "../engine/scan-job.ts";
import type { SideContext } from "../engine/side-context.ts";
import type { ClientConnection } from "./client-connection.ts";
import type { RefineRequests } from "./refine-requests.ts";
import type { RecordParts } from "../util/record-parts.ts";
import { encodeOp } from "./refine-wire.ts";

export async function refineInStream(
  ctx: SideContext,
  run: { offset: number; length: number },
  o: {
    cookie: number;
    send: (rec: RecordParts) => Promise<void>;
    refines: RefineRequests;
    activity?: { begin(): void; end(): void };
    zstdLevel: number;
    dryRun: boolean;
    policy?: RefinePolicy;
    /** Each op once sent, with the level its patch job ran at (CompressPolicy.sentOp). */
    sent?: (op: JobOp, level: number) => void;
  },
): Promise<void> {
  const answer = o.refines.expect(o.cookie, run);
  answer.catch(() => {}); // awaited below; observed from now on
  await o.send(encode({ type: "REFINE", cookie: o.cookie, offset: run.offset, length: run.length }));
  o.activity?.end();
  let digests: Uint8Array;
  try {
    digests = await answer;
  } finally {
    o.activity?.begin();
  }
  const ops = await patchOps(ctx, { ...run, dst: digests }, { zstdLevel: o.zstdLevel, dryRun: o.dryRun });
  o.policy?.learn(run.length, ops.reduce((n, op) => n + changedBytes(op), 0));
  for (const op of ops) {
    if (op.kind === "refine") throw new Error("Cannot refine: a patch job asked to refine again");
    countOp(ctx.stats, op, ctx.blockSize);
    await o.send(encodeOp(op, o.cookie));
    o.sent?.(op, o.zstdLevel);
  }
}

export class StreamRefines {
  #conn: ClientConnection;
  #ctx: SideContext;
  #writer: DestinationWriter;
  #fail: (e: unknown) => void;
  #busy = false;
  #last: Promise<void> = Promise.resolve();

  constructor(conn: ClientConnection, ctx: SideContext, o: { writer: DestinationWriter; fail: (e: unknown) => void }) {
    this.#conn = conn;
    this.#ctx = ctx;
    this.#writer = o.writer;
    this.#fail = o.fail;
  }

  /** Checks the REFINE at once (ProtocolError) and starts its answer. The caller checked it lies in the stream's range, at or after `next`. */
  handle(m: RefineMessage): void {
    if (this.#busy) throw new ProtocolError(`REFINE at ${m.offset} while the stream's previous REFINE is unanswered`);
    this.#writer.refine(m.offset, m.length);
    this.#ctx.stats.blocksRefined += Math.ceil(m.length / this.#ctx.blockSize); // counted as the source counts them
    this.#busy = true;
    this.#last = subDigestRange(this.#ctx, m).then((digests) => {
      this.#busy = false;
      this.#conn.answer({ type: "SUB_DIGESTS", cookie: m.cookie, offset: m.offset, length: m.length, digests });
    }).catch((e) => this.#fail(e));
  }

  /** Settles once the last answer is sent (or failed the session). */
  get done(): Promise<void> {
    return this.#last;
  }
}
