/**
 * The server's side of one session: the destination for push, the source for pull.
 *
 * 1. The first record must be OPEN; the file is opened through `open` (which enforces what
 *    the listener allows) and, for push, sized to the source (unless a dry run).
 * 2. Requests are handled concurrently, at most SERVER_TASKS at once; reading stops while
 *    that many run. Writes register with the DestinationWriter in arrival order.
 * 3. A request that fails gets an ERROR reply and the session goes on; a ProtocolError or a
 *    channel failure ends the session at once.
 * 4. COMMIT compares root hashes once every range is done; the end of the channel ends the
 *    session, releasing the file.
 */
import { decode, encode, ProtocolError } from "../../protocol/codec.ts";
import { MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, PROTOCOL_VERSION } from "../../protocol/constants.ts";
import type { CommitMessage, Message, OpenMessage, ServerCounters } from "../../protocol/messages.ts";
import { DestinationWriter, digestRange } from "../engine/destination-side.ts";
import { RootHash } from "../engine/root-hash.ts";
import { type SideContext, SideStats } from "../engine/side-context.ts";
import { diffRange } from "../engine/source-side.ts";
import type { WorkerPool } from "../engine/worker-pool.ts";
import type { RecordChannel } from "../net/record-channel.ts";
import type { Storage } from "../storage/storage.ts";
import { equalBytes } from "../util/equal-bytes.ts";
import { ErrnoError, errorName, messageOf } from "../util/errors.ts";
import { TaskGroup } from "../util/task-group.ts";
import { checkRange } from "./range-check.ts";
import { LOOKAHEAD_JOBS, MAX_OPEN_RANGES, SERVER_TASKS, ZSTD_LEVEL } from "./session-limits.ts";
import { WireCounters } from "./wire-counters.ts";

export interface OpenRequest {
  name: string;
  /** push: the server writes (destination); pull: the server reads (source). */
  mode: "push" | "pull";
  dryRun: boolean;
}

export interface ServerSessionResult {
  name: string | undefined;
  mode: "push" | "pull" | undefined;
  committed: boolean;
  stats: SideStats;
  wire: WireCounters;
  error: Error | undefined;
}

export async function serveSession(
  channel: RecordChannel,
  options: {
    open: (req: OpenRequest) => Promise<Storage>;
    pool: WorkerPool;
    /** Told when a request starts and ends (the listener's idle timeout spares busy sessions). */
    activity?: { begin(): void; end(): void };
  },
): Promise<ServerSessionResult> {
  const wire = new WireCounters();
  const stats = new SideStats();
  const result: ServerSessionResult = { name: undefined, mode: undefined, committed: false, stats, wire, error: undefined };
  const group = new TaskGroup({ limit: SERVER_TASKS });
  // A task's violation ends the session now, even while the loop waits for the next record.
  group.signal.addEventListener("abort", () => {
    const reason = group.signal.reason;
    channel.close(reason instanceof Error ? reason : new Error(String(reason)));
  }, { once: true });
  const send = (m: Message) => {
    const rec = encode(m);
    wire.sent(rec.length);
    return channel.send(rec);
  };
  const receive = async (): Promise<Message | null> => {
    const rec = await channel.receive();
    if (rec === null) return null;
    const m = decode(rec);
    wire.received(rec.length);
    return m;
  };
  let store: Storage | undefined;
  const committed = () => {
    result.committed = true;
  };
  /** ERROR text for the client: the server's own path of the file (a /proc/self/fd link, an
   *  export's device) is shown as the name the client asked for. */
  const publicMessage = (e: unknown): string => {
    const text = messageOf(e);
    return store !== undefined && store.path !== "" && result.name !== undefined ? text.split(store.path).join(result.name) : text;
  };
  try {
    const open = await receive();
    if (open === null) return result;
    if (open.type !== "OPEN") throw new ProtocolError(`expected OPEN, got ${open.type}`);
    result.name = open.name;
    result.mode = open.mode;
    const problem = checkOpen(open);
    if (problem) {
      await send({ type: "ERROR", cookie: open.cookie, code: "EINVAL", message: problem });
      throw new Error(problem);
    }
    let originalSize: number;
    try {
      store = await options.open({ name: open.name, mode: open.mode, dryRun: open.dryRun });
      originalSize = store.size;
      if (open.mode === "push" && !open.dryRun && store.size !== open.size) await store.setSize(open.size);
    } catch (e) {
      await send({ type: "ERROR", cookie: open.cookie, code: errorName(e), message: publicMessage(e) });
      throw e;
    }
    const ctx: SideContext = {
      pool: options.pool,
      store,
      hash: open.hash,
      key: open.key,
      blockSize: open.blockSize,
      size: open.mode === "push" ? open.size : store.size,
      stats,
      signal: group.signal,
    };
    await send({ type: "OPEN_OK", cookie: open.cookie, size: originalSize, zstd: true, kind: store.kind });
    const handler = open.mode === "push"
      ? await destinationHandler(ctx, { dryRun: open.dryRun, send, committed })
      : sourceHandler(ctx, { dryRun: open.dryRun, send, committed });
    for (;;) {
      group.throwIfFailed();
      const msg = await receive();
      if (msg === null) break;
      const task = handler(msg);
      await group.spawn(async () => {
        options.activity?.begin();
        try {
          await task();
        } catch (e) {
          if (e instanceof ProtocolError) throw e;
          await send({ type: "ERROR", cookie: msg.cookie, code: errorName(e), message: publicMessage(e) });
        } finally {
          options.activity?.end();
        }
      });
    }
    await group.wait();
    channel.close();
  } catch (e) {
    result.error = e instanceof Error ? e : new Error(String(e));
    result.committed = false;
    group.fail(e);
    channel.close(result.error);
  } finally {
    await store?.[Symbol.asyncDispose]();
  }
  return result;
}

function checkOpen(m: OpenMessage): string | undefined {
  if (m.version !== PROTOCOL_VERSION) return `protocol version ${m.version} is not supported (this side speaks ${PROTOCOL_VERSION})`;
  const bs = m.blockSize;
  if (bs < MIN_BLOCK_SIZE || bs > MAX_BLOCK_SIZE || (bs & (bs - 1)) !== 0) {
    return `block size ${bs} is not a power of two in [${MIN_BLOCK_SIZE}, ${MAX_BLOCK_SIZE}]`;
  }
  return undefined;
}

type Send = (m: Message) => Promise<void>;
interface HandlerOptions {
  dryRun: boolean;
  send: Send;
  committed: () => void;
}
/** Dispatches one request synchronously (registering writes in order), returning its work. */
type Handler = (m: Message) => () => Promise<void>;

/** COMMIT, either side: every block covered, roots equal (not compared in a dry run), COMMIT_OK. */
async function commit(ctx: SideContext, c: { root: RootHash; request: CommitMessage; handler: HandlerOptions }): Promise<void> {
  const totalBlocks = Math.ceil(ctx.size / ctx.blockSize);
  if (c.root.blocks !== totalBlocks) throw new ProtocolError(`COMMIT after ${c.root.blocks} of ${totalBlocks} blocks`);
  const mine = c.root.finish(ctx.size, ctx.blockSize);
  if (!c.handler.dryRun && !equalBytes(mine, c.request.root)) {
    throw new ErrnoError("EBADMSG", "root hash mismatch: the destination does not match the source");
  }
  await c.handler.send({ type: "COMMIT_OK", cookie: c.request.cookie, root: mine, counters: counters(ctx.stats) });
  c.handler.committed();
}

function counters(s: SideStats): ServerCounters {
  return { bytesRead: s.bytesRead, holeBytesSkipped: s.holeBytesSkipped, bytesWritten: s.bytesWritten, bytesPunched: s.bytesPunched };
}

async function destinationHandler(ctx: SideContext, o: HandlerOptions): Promise<Handler> {
  const writer = await DestinationWriter.create(ctx, { dryRun: o.dryRun, maxOpenRanges: MAX_OPEN_RANGES });
  const session = { size: ctx.size, blockSize: ctx.blockSize };
  return (m) => {
    switch (m.type) {
      case "SIGS":
        checkRange(m, session);
        return async () => {
          const digests = await digestRange(ctx, m, { lookahead: LOOKAHEAD_JOBS, punchZeroBlocks: !o.dryRun });
          writer.open(m.offset, digests.slice());
          await o.send({ type: "SIGS_REPLY", cookie: m.cookie, offset: m.offset, length: m.length, digests });
        };
      case "DATA":
      case "ZERO": {
        if (m.type === "DATA" && !m.payload && !o.dryRun) throw new ProtocolError("DATA without payload outside a dry run");
        const done = writer.write(m.type === "DATA" ? { ...m, kind: "data" } : { ...m, kind: "zero" });
        return async () => {
          await done;
          await o.send({ type: "ACK", cookie: m.cookie });
        };
      }
      case "RANGE_DONE": {
        checkRange(m, session);
        const closed = writer.close(m.offset);
        return async () => {
          await closed;
          await o.send({ type: "ACK", cookie: m.cookie });
        };
      }
      case "FLUSH":
        return async () => {
          if (!o.dryRun) await ctx.store.sync();
          await o.send({ type: "ACK", cookie: m.cookie });
        };
      case "COMMIT":
        return async () => {
          if (writer.openRanges > 0) throw new ProtocolError(`COMMIT with ${writer.openRanges} ranges still open`);
          if (!o.dryRun) await ctx.store.sync();
          await commit(ctx, { root: writer.root, request: m, handler: o });
        };
      case "OPEN":
      case "OPEN_OK":
      case "SIGS_REPLY":
      case "READ_DIFF":
      case "COMMIT_OK":
      case "ACK":
      case "ERROR":
        throw new ProtocolError(`${m.type} is not a request a push destination accepts`);
      default:
        throw new ProtocolError(`unhandled ${(m satisfies never as Message).type}`);
    }
  };
}

function sourceHandler(ctx: SideContext, o: HandlerOptions): Handler {
  const root = new RootHash(ctx.key);
  const session = { size: ctx.size, blockSize: ctx.blockSize };
  return (m) => {
    switch (m.type) {
      case "READ_DIFF":
        checkRange(m, session);
        return async () => {
          const src = await diffRange(ctx, { offset: m.offset, length: m.length, dst: m.digests }, {
            zstdLevel: ZSTD_LEVEL,
            dryRun: o.dryRun,
            lookahead: LOOKAHEAD_JOBS,
            emit: (op) =>
              o.send(op.kind === "data"
                ? { type: "DATA", cookie: m.cookie, offset: op.offset, length: op.length, payload: op.payload, zstd: op.zstd }
                : { type: "ZERO", cookie: m.cookie, offset: op.offset, length: op.length }),
          });
          root.add(m.offset / ctx.blockSize, src);
          await o.send({ type: "RANGE_DONE", cookie: m.cookie, offset: m.offset, length: m.length });
        };
      case "COMMIT":
        return () => commit(ctx, { root, request: m, handler: o });
      case "OPEN":
      case "OPEN_OK":
      case "SIGS":
      case "SIGS_REPLY":
      case "DATA":
      case "ZERO":
      case "RANGE_DONE":
      case "FLUSH":
      case "COMMIT_OK":
      case "ACK":
      case "ERROR":
        throw new ProtocolError(`${m.type} is not a request a pull source accepts`);
      default:
        throw new ProtocolError(`unhandled ${(m satisfies never as Message).type}`);
    }
  };
}
