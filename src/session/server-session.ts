/**
 * The server's side of one session: the destination for push, the source for pull.
 *
 * 1. The first record must be OPEN; the file is opened through `open` (which enforces what
 *    the listener allows) and, for push, sized to the source (unless a dry run; a shrink that
 *    would drop data only with OPEN_ALLOW_SHRINK, shrink-check.ts). A refused OPEN gets
 *    ERROR, then the session ends in order. Until OPEN is answered, `signal` (the peer gone,
 *    the listener stopping) aborts the session: nothing reads the channel then to see it end.
 * 2. The receive loop checks and dispatches each request in arrival order: its cookie must
 *    not be one still in flight; a range (SIGS, READ_DIFF) must not overlap one claimed
 *    before; DATA, ZERO and RANGE_DONE must name a range that is open (its SIGS_REPLY sent).
 *    Writes register with the DestinationWriter then. Whatever a request starts on arrival
 *    is observed at once, so no rejection is ever unhandled.
 * 3. Its work runs as a task, at most SERVER_TASKS at once (of which at most PULL_TASKS
 *    READ_DIFFs read and send, the others wait: a READ_DIFF waiting for the client's
 *    SUB_DIGESTS must never keep the loop from reading them); the
 *    loop stops reading while that many run, or while the request's buffers do not fit in
 *    the session's memory (SessionMemory: SESSION_BUFFER_BYTES, and the listener's budget).
 * 4. A request that fails gets ERROR and the session goes on; a ProtocolError ends the session
 *    at once: the connection is closed (nothing more is sent, no ERROR, no END).
 * 5. COMMIT answers COMMIT_OK once every block is covered and the roots agree, else ERROR
 *    EBADMSG. A pull source that is a regular file and changed since the session opened it
 *    (SourceWatch: checked after each range is read and at COMMIT) answers ERROR ESTALE.
 *    The end of the channel ends the session, releasing the file. The result's
 *    error is the first cause (a write's ENOSPC, not the broken pipe that follows it).
 */
import { decode, encode, ProtocolError } from "../../protocol/codec.ts";
import { DIGEST_SIZE, HEADER_SIZE, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, PROTOCOL_VERSION, SUB_BLOCK_SIZE } from "../../protocol/constants.ts";
import type { CommitMessage, FileAttributes, Message, OpenMessage, ServerCounters } from "../../protocol/messages.ts";
import { CompressPolicy } from "../engine/compress-policy.ts";
import { DestinationWriter, digestRange } from "../engine/destination-side.ts";
import { RootHash } from "../engine/root-hash.ts";
import { ReadAhead } from "../engine/read-ahead.ts";
import { type SideContext, SideStats } from "../engine/side-context.ts";
import { subDigestRange } from "../engine/refine.ts";
import { RefinePolicy } from "../engine/refine-policy.ts";
import { diffRange, SENT } from "../engine/source-side.ts";
import type { WorkerPool } from "../engine/worker-pool.ts";
import type { RecordChannel } from "../net/record-channel.ts";
import type { Storage } from "../storage/storage.ts";
import { ByteWindow } from "../util/byte-window.ts";
import { equalBytes } from "../util/equal-bytes.ts";
import { asError, ErrnoError, errorName, messageOf } from "../util/errors.ts";
import { type RecordParts, recordLength } from "../util/record-parts.ts";
import { TaskGroup } from "../util/task-group.ts";
import { checkRange, RangeClaims } from "./range-check.ts";
import { refineInStream } from "./refine-pull.ts";
import { RefineRequests } from "./refine-requests.ts";
import { RequestReader } from "./request-reader.ts";
import { encodeOp, patchHoldBytes, writeOpOf } from "./refine-wire.ts";
import { type Hold, SessionMemory } from "./session-memory.ts";
import type { SessionProgress } from "./session-progress.ts";
import type { FileStamp } from "../storage/file-stamp.ts";
import { attributesOf, currentAttributes, restrict } from "./file-attributes.ts";
import { SourceWatch, stampOf } from "./source-watch.ts";
import { checkShrink } from "./shrink-check.ts";
import { type CachePolicy, CacheSession } from "./cache-session.ts";
import { TestPause } from "./test-pause.ts";
import {
  LOOKAHEAD_JOBS,
  MAX_OPEN_RANGES,
  MAX_TRACKED_INTERVALS,
  PULL_TASKS,
  REQUEST_READ_AHEAD_BYTES,
  SERVER_TASKS,
  SESSION_BUFFER_BYTES,
} from "./session-limits.ts";
import { WireCounters } from "./wire-counters.ts";

export interface OpenRequest {
  name: string;
  /** push: the server writes (destination); pull: the server reads (source). */
  mode: "push" | "pull";
  dryRun: boolean;
  /** Push: the client asked to write in place (no journal, no partial file). */
  inplace: boolean;
}

export interface ServerSessionResult {
  name: string | undefined;
  mode: "push" | "pull" | undefined;
  committed: boolean;
  stats: SideStats;
  wire: WireCounters;
  /** The first cause of the session's failure, if it failed. */
  error: Error | undefined;
}

/** Told when a request starts and ends (the listener's idle timeout spares busy sessions). */
export interface SessionActivity {
  begin(): void;
  end(): void;
  /** The record just received is no activity: it must not reset the idle clock (a dry-run FLUSH). */
  ignoreLastRecord?(): void;
}

export interface ServeOptions {
  open: (req: OpenRequest) => Promise<Storage>;
  pool: WorkerPool;
  activity?: SessionActivity;
  /**
   * Aborted when the session must end now: the peer is gone, or the listener stops the
   * session. Watched while OPEN is handled (the open, the shrink check), when nothing waits on
   * the channel to see it end; from OPEN_OK on, the channel's end stops the session itself.
   */
  signal?: AbortSignal;
  /**
   * The listener's memory budget, shared by all its sessions: a session holds bytes of it for
   * job results waiting to be sent and for DATA waiting to be written, and gives them back.
   */
  memory?: ByteWindow;
  /** Kept up to date for a watcher that polls it (the listener's periodic line). */
  progress?: SessionProgress;
  /**
   * A batch's slot: the session's own window (default SESSION_BUFFER_BYTES), and the window
   * its shared holds take too, which the batch's slots share (spec "Batches").
   */
  bufferBytes?: number;
  batchMemory?: ByteWindow;
  /**
   * Grant META_OWNER to a push that asks for it: only `ssync sync` run as root does; a
   * listener never sets owner and group over the network (spec §7).
   */
  grantOwner?: boolean;
  /**
   * True for a name that opens one of the listener's exports (matched as open-for-client.ts
   * matches it): a push to it grants no metadata, whatever the client asks (spec §5.9): the
   * admin named that path, and its mode and mtime are the admin's.
   */
  exported?: (name: string) => boolean;
  /** The listener's signature cache for push destinations (spec §5.10); absent: none is kept. */
  cache?: ServerCache;
}

export interface ServerCache {
  policy: CachePolicy;
  /** The path an entry of `name` is kept under: the file's path as the listener resolves it. */
  path: (name: string) => string;
  /** The client's static public key: the only peer its entries' keys are ever offered to. */
  peer: Uint8Array;
  /** Told when an entry could not be written (the sync stands). */
  warn?: (message: string) => void;
}

export async function serveSession(channel: RecordChannel, options: ServeOptions): Promise<ServerSessionResult> {
  const wire = new WireCounters();
  const stats = new SideStats();
  const result: ServerSessionResult = { name: undefined, mode: undefined, committed: false, stats, wire, error: undefined };
  // The session's one abort path: the first failure aborts it, and that closes the channel.
  const controller = new AbortController();
  controller.signal.addEventListener("abort", () => {
    const reason = controller.signal.reason;
    channel.close(asError(reason));
  }, { once: true });
  const memory = new SessionMemory({
    own: new ByteWindow(options.bufferBytes ?? SESSION_BUFFER_BYTES),
    shared: options.memory,
    batch: options.batchMemory,
    signal: controller.signal,
  });
  let firstCause: Error | undefined;
  const noteFailure = (e: unknown) => {
    firstCause ??= asError(e);
  };
  const receive = async (): Promise<Message | null> => {
    const rec = await channel.receive();
    if (rec === null) return null;
    const m = decode(rec);
    wire.received(rec.length);
    return m;
  };
  const inFlight = new Set<number>();
  let store: Storage | undefined;
  let cache: CacheSession | undefined;
  /** ERROR text for the client: the server's own path of the file (a /proc/self/fd link, an
   *  export's device) is shown as the name the client asked for. */
  const publicMessage = (e: unknown): string => {
    const text = messageOf(e);
    return store !== undefined && store.path !== "" && result.name !== undefined ? text.split(store.path).join(result.name) : text;
  };
  const io: SessionIo = {
    send: (rec) => {
      wire.sent(recordLength(rec));
      return channel.send(rec);
    },
    reply: (rec, cookie) => {
      // Out of flight once its final reply is on its way: the cookie may be used again.
      inFlight.delete(cookie);
      wire.sent(rec.length);
      return channel.send(rec);
    },
    memory,
    signal: controller.signal,
    activity: options.activity,
    sendBacklog: () => channel.sendBacklog?.() ?? 0,
    committed: () => {
      result.committed = true;
    },
  };
  let group: TaskGroup | undefined;
  try {
    const open = await receive();
    if (open === null) return result;
    if (open.type !== "OPEN") throw new ProtocolError(`expected OPEN, got ${open.type}`);
    result.name = open.name;
    result.mode = open.mode;
    let originalSize: number;
    let metadata: SessionMetadata | undefined;
    const stopped = () => controller.abort(asError(options.signal!.reason));
    if (options.signal?.aborted) stopped();
    options.signal?.addEventListener("abort", stopped, { once: true });
    try {
      const problem = checkOpen(open);
      if (problem) throw new ErrnoError("EINVAL", problem);
      store = await options.open({ name: open.name, mode: open.mode, dryRun: open.dryRun, inplace: open.inPlace === true });
      originalSize = store.size;
      if (open.mode === "push") await checkShrink(store, { size: open.size, allowShrink: open.allowShrink === true, name: open.name, signal: controller.signal });
      // Before the destination changes: its entry leaves the cache folder, used or not (§5.10).
      if (open.mode === "push" && !open.dryRun && options.cache) {
        cache = await CacheSession.begin(store, options.cache.policy, {
          path: options.cache.path(open.name),
          peer: options.cache.peer,
          blockSize: open.blockSize,
          hash: open.hash,
          use: open.cacheKey === true,
        });
        await cache.checkSize(open.size);
      }
      if (open.metadata) {
        metadata = await sessionMetadata(store, open.metadata, {
          mode: open.mode,
          grantOwner: options.grantOwner === true,
          exported: options.exported?.(open.name) === true,
        });
      }
      if (open.mode === "push" && !open.dryRun && store.size !== open.size) await store.setSize(open.size);
    } catch (e) {
      // Not a violation: the answer is ERROR, then the session ends in order.
      noteFailure(e);
      await io.reply(encode({ type: "ERROR", cookie: open.cookie, code: errorName(e), message: publicMessage(e) }), open.cookie);
      channel.close();
      return result;
    } finally {
      options.signal?.removeEventListener("abort", stopped);
    }
    // A cache hit: both sides hash under the entry's key, which this client chose (§5.10).
    const key = cache?.key ?? open.key;
    const ctx: SideContext = {
      pool: options.pool,
      store,
      hash: open.hash,
      key,
      blockSize: open.blockSize,
      size: open.mode === "push" ? open.size : store.size,
      stats,
      readAhead: new ReadAhead(store),
      signal: controller.signal,
    };
    group = new TaskGroup({ limit: SERVER_TASKS, controller });
    // Refinement (spec §5.8) only when the client offered it: an older client never sees CAP_REFINE.
    const refine = open.refine === true;
    await io.reply(
      encode({
        type: "OPEN_OK",
        cookie: open.cookie,
        size: originalSize,
        zstd: true,
        kind: store.kind,
        ...(refine ? { refine } : {}),
        ...(metadata ? { metadata: metadata.reply } : {}),
        ...(cache?.hit ? { cacheKey: key } : {}),
      }),
      open.cookie,
    );
    await cache?.startRecording({ key, size: ctx.size });
    // A push destination counts what it applied; a pull source what it sent.
    options.progress?.begin({
      total: ctx.size,
      wire,
      changed: open.mode === "push" ? () => stats.bytesWritten + stats.bytesPunched : () => stats.bytesSent + stats.bytesZeroed,
    });
    const claims = new RangeClaims({ blockSize: ctx.blockSize, maxIntervals: MAX_TRACKED_INTERVALS });
    const refines = new RefineRequests(controller.signal);
    const handler = open.mode === "push"
      ? await destinationHandler(ctx, {
        open,
        io,
        claims,
        refine,
        refines,
        progress: options.progress,
        commitMetadata: metadata?.commit,
        cache: cache && { session: cache, warn: options.cache?.warn },
      })
      : sourceHandler(ctx, { open, io, claims, refine, refines, progress: options.progress, sourceStamp: metadata?.stamp });
    // The client sends nothing more: a stream waiting for its SUB_DIGESTS would wait forever.
    const noMoreAnswers = () => refines.end(new ErrnoError("EPROTO", "Cannot refine: the client ended the session"));
    // A refining pull reads ahead, so SUB_DIGESTS never wait behind requests that wait (for
    // memory a waiting stream holds); otherwise requests are read one by one, as they are handled.
    const reader = open.mode === "pull" && refine
      ? new RequestReader(async () => {
        const rec = await channel.receive();
        if (rec === null) return null;
        const msg = decode(rec);
        wire.received(rec.length);
        return { msg, bytes: rec.length };
      }, {
        maxBytes: REQUEST_READ_AHEAD_BYTES,
        onAnswer: (m) => refines.answer(m),
        onEnd: noMoreAnswers,
        onFailure: (e) => {
          noteFailure(e);
          if (!controller.signal.aborted) controller.abort(e);
        },
        signal: controller.signal,
      })
      : undefined;
    for (;;) {
      group.throwIfFailed();
      const msg = reader ? await reader.next() : await receive();
      if (msg === null) {
        noMoreAnswers();
        break;
      }
      // Not a request: the answer to a REFINE a pull stream sent (its cookie is that stream's).
      if (msg.type === "SUB_DIGESTS") {
        refines.answer(msg);
        continue;
      }
      if (inFlight.has(msg.cookie)) throw new ProtocolError(`${msg.type}: cookie ${msg.cookie} is already in flight`);
      inFlight.add(msg.cookie);
      const work = await handler(msg);
      await group.spawn(async () => {
        options.activity?.begin();
        try {
          await work();
        } catch (e) {
          if (e instanceof ProtocolError || controller.signal.aborted) throw e;
          noteFailure(e);
          await io.reply(encode({ type: "ERROR", cookie: msg.cookie, code: errorName(e), message: publicMessage(e) }), msg.cookie);
        } finally {
          options.activity?.end();
        }
      });
    }
    await group.wait();
    channel.close();
  } catch (e) {
    noteFailure(e);
    result.committed = false;
    if (!controller.signal.aborted) controller.abort(e);
    // Every task ends soon once aborted (sends and memory waits reject); none outlives the store.
    await group?.wait().catch(() => {});
  } finally {
    memory.dispose();
    await cache?.[Symbol.asyncDispose]();
    await store?.[Symbol.asyncDispose]();
    result.error = firstCause;
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

/** What the handlers use of the session. */
interface SessionIo {
  /** Sends a record that is not the request's last reply (pull: DATA, ZERO). */
  send: (rec: RecordParts) => Promise<void>;
  /** Sends the request's final reply: `cookie` is out of flight from now on. */
  reply: (rec: Uint8Array, cookie: number) => Promise<void>;
  memory: SessionMemory;
  signal: AbortSignal;
  activity: SessionActivity | undefined;
  /** The channel's RecordChannel.sendBacklog (0 without one). */
  sendBacklog: () => number;
  committed: () => void;
}

interface HandlerOptions {
  open: OpenMessage;
  io: SessionIo;
  claims: RangeClaims;
  /** Refinement negotiated (OPEN_REFINE, answered CAP_REFINE). */
  refine: boolean;
  /** Pull: the REFINEs its streams wait on. */
  refines: RefineRequests;
  progress: SessionProgress | undefined;
  /** Push: what the destination takes at commit (the attributes granted, the source's values). */
  commitMetadata?: FileAttributes;
  /** Pull: the source's stamp its OPEN_OK metadata came from; the SourceWatch starts from it. */
  sourceStamp?: FileStamp;
  /** Push: the destination's signature cache for this session (§5.10). */
  cache?: { session: CacheSession; warn?: (message: string) => void };
}

interface SessionMetadata {
  /** OPEN_OK's METADATA. */
  reply: FileAttributes;
  commit?: FileAttributes;
  stamp?: FileStamp;
}

/**
 * OPEN_METADATA (spec §5.9). Push: the attributes granted (mode and mtime; owner only with
 * `grantOwner`; none to an export), with the destination's current values (zeros for a file
 * that does not exist yet, a dry run's); pull: the source's, stamped now. A block device: none
 * either way.
 */
async function sessionMetadata(
  store: Storage,
  asked: FileAttributes,
  o: { mode: "push" | "pull"; grantOwner: boolean; exported: boolean },
): Promise<SessionMetadata> {
  if (store.kind !== "file") return { reply: {} };
  if (o.mode === "pull") {
    const stamp = await stampOf(store);
    return { reply: attributesOf(stamp), stamp };
  }
  if (o.exported) return { reply: {} };
  const granted = restrict(asked, { mode: 0, mtimeNs: 0n, ...(o.grantOwner ? { owner: { uid: 0, gid: 0 } } : {}) });
  const before = await currentAttributes(store) ?? { mode: 0, mtimeNs: 0n, owner: { uid: 0, gid: 0 } };
  return { reply: restrict(before, granted), commit: granted };
}

/**
 * Checks and dispatches one request on arrival (throwing a ProtocolError for a violation),
 * waiting first for the memory it will hold; returns its work, to run as a task.
 */
type Handler = (m: Message) => Promise<() => Promise<void>>;

/** Marks a promise made on arrival as observed: its task awaits it later, or never (the session failed). */
function observed<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}

/**
 * COMMIT, either side: nothing open and every block covered (else ERROR EBADMSG), then roots
 * equal (not compared in a dry run), then `store` (a push destination: Storage.commit, which
 * is when its changes reach it), COMMIT_OK. A mismatch commits nothing: a journaled
 * destination stays its old image.
 */
async function commit(
  ctx: SideContext,
  c: { root: RootHash; request: CommitMessage; handler: HandlerOptions; store?: () => Promise<void> },
): Promise<void> {
  const { claims, io, open } = c.handler;
  if (claims.unclosed > 0) throw new ErrnoError("EBADMSG", `Cannot commit: ${claims.unclosed} ranges are still open`);
  const totalBlocks = Math.ceil(ctx.size / ctx.blockSize);
  if (c.root.blocks !== totalBlocks) throw new ErrnoError("EBADMSG", `Cannot commit: ${c.root.blocks} of ${totalBlocks} blocks are covered`);
  const mine = c.root.finish(ctx.size, ctx.blockSize);
  if (!open.dryRun && !equalBytes(mine, c.request.root)) {
    throw new ErrnoError("EBADMSG", "root hash mismatch: the destination does not match the source");
  }
  await c.store?.();
  await io.reply(encode({ type: "COMMIT_OK", cookie: c.request.cookie, root: mine, counters: counters(ctx.stats) }), c.request.cookie);
  io.committed();
}

function counters(s: SideStats): ServerCounters {
  return { bytesRead: s.bytesRead, holeBytesSkipped: s.holeBytesSkipped, bytesWritten: s.bytesWritten, bytesPunched: s.bytesPunched };
}

/** Upper bound of a SIGS_REPLY record for `blocks` blocks: a run header and a digest per block. */
function replyBound(blocks: number): number {
  return HEADER_SIZE + blocks * (5 + DIGEST_SIZE);
}

async function destinationHandler(ctx: SideContext, o: HandlerOptions): Promise<Handler> {
  const { io, claims } = o;
  const dryRun = o.open.dryRun;
  const cache = o.cache?.session;
  const writer = await DestinationWriter.create(ctx, {
    dryRun,
    maxIntervals: MAX_TRACKED_INTERVALS,
    ...(cache ? { onClosed: (first: number, digests: Uint8Array) => cache.record(first, digests) } : {}),
  });
  const session = { size: ctx.size, blockSize: ctx.blockSize };
  /** The memory each open range's digests hold, given back when it closes. */
  const rangeHolds = new Map<number, Hold>();
  const ack = (cookie: number) => io.reply(encode({ type: "ACK", cookie }), cookie);
  return async (m) => {
    switch (m.type) {
      case "SIGS": {
        checkRange(m, session);
        if (claims.unclosed >= MAX_OPEN_RANGES) {
          throw new ProtocolError(`more than ${MAX_OPEN_RANGES} open ranges (SIGS without RANGE_DONE)`);
        }
        claims.claim(m);
        const digestBytes = Math.ceil(m.length / ctx.blockSize) * DIGEST_SIZE;
        const hold = await io.memory.hold(digestBytes + replyBound(digestBytes / DIGEST_SIZE), { shared: false });
        return async () => {
          let opened = false;
          try {
            const digests = cache?.hit
              ? await cachedDigests(ctx, cache, m)
              : await digestRange(ctx, m, { lookahead: LOOKAHEAD_JOBS, punchZeroBlocks: !dryRun });
            // Encoded before the range opens: writes change `digests` from then on.
            const reply = encode({ type: "SIGS_REPLY", cookie: m.cookie, offset: m.offset, length: m.length, digests });
            hold.shrink(digestBytes + reply.length);
            // The range is open from here: DATA, ZERO and RANGE_DONE that arrive from now on may name it.
            writer.open(m.offset, digests);
            opened = true;
            rangeHolds.set(m.offset, hold);
            await io.reply(reply, m.cookie);
            hold.shrink(digestBytes);
          } finally {
            if (!opened) {
              hold.release();
              claims.settle(m.offset);
            }
          }
        };
      }
      case "REFINE": {
        if (!o.refine) throw new ProtocolError("REFINE without OPEN_REFINE");
        writer.refine(m.offset, m.length);
        const pages = Math.ceil(m.length / SUB_BLOCK_SIZE);
        const hold = await io.memory.hold(HEADER_SIZE + pages * (5 + DIGEST_SIZE), { shared: false });
        return async () => {
          try {
            const digests = await subDigestRange(ctx, m);
            await io.reply(encode({ type: "SUB_DIGESTS", cookie: m.cookie, offset: m.offset, length: m.length, digests }), m.cookie);
          } finally {
            hold.release();
          }
        };
      }
      case "DATA":
      case "ZERO":
      case "PATCH": {
        if (m.type === "PATCH" && !o.refine) throw new ProtocolError("PATCH without OPEN_REFINE");
        if ((m.type === "DATA" || m.type === "PATCH") && !m.payload && !dryRun) throw new ProtocolError(`${m.type} without payload outside a dry run`);
        // The record and what it decompresses to (a PATCH: and the blocks it patches), until the write is applied.
        const bytes = m.type === "PATCH"
          ? patchHoldBytes(m)
          : m.type === "DATA" && m.payload ? HEADER_SIZE + m.payload.length + (m.zstd ? m.length : 0) : 0;
        const hold = bytes > 0 ? await io.memory.hold(bytes, { shared: true }) : undefined;
        let done: Promise<void>;
        try {
          done = writer.write(writeOpOf(m));
        } catch (e) {
          hold?.release();
          throw e;
        }
        done.then(() => hold?.release(), () => hold?.release());
        return async () => {
          await done;
          await ack(m.cookie);
        };
      }
      case "RANGE_DONE": {
        checkRange(m, session);
        const closed = observed(writer.close(m.offset, m.length));
        claims.settle(m.offset);
        const hold = rangeHolds.get(m.offset);
        rangeHolds.delete(m.offset);
        closed.then(() => hold?.release(), () => hold?.release());
        return async () => {
          await closed;
          o.progress?.rangeDone(m.length);
          await ack(m.cookie);
        };
      }
      case "FLUSH":
        // Optional before COMMIT (COMMIT syncs anyway). A dry run's FLUSH does nothing, so it
        // does not count as activity: it cannot hold a session open past the idle timeout.
        if (dryRun) io.activity?.ignoreLastRecord?.();
        return async () => {
          if (!dryRun) await ctx.store.sync();
          await ack(m.cookie);
        };
      case "COMMIT":
        return () =>
          commit(ctx, {
            root: writer.root,
            request: m,
            handler: o,
            store: dryRun ? undefined : async () => {
              await ctx.store.commit(o.commitMetadata);
              // After the commit's last change; before COMMIT_OK, so the next session finds it.
              const why = await cache?.committed();
              if (why) o.cache?.warn?.(why);
            },
          });
      case "OPEN":
      case "OPEN_OK":
      case "SIGS_REPLY":
      case "READ_DIFF":
      case "COMMIT_OK":
      case "ACK":
      case "ERROR":
      case "SUB_DIGESTS":
        throw new ProtocolError(`${m.type} is not a request a push destination accepts`);
      default:
        throw new ProtocolError(`unhandled ${(m satisfies never as Message).type}`);
    }
  };
}

/** A SIGS range's digests from the signature cache: nothing is read (§5.10). */
async function cachedDigests(ctx: SideContext, cache: CacheSession, range: { offset: number; length: number }): Promise<Uint8Array> {
  const digests = await cache.digests(range.offset, range.length);
  ctx.stats.bytesFromCache += range.length;
  return digests;
}

function sourceHandler(ctx: SideContext, o: HandlerOptions): Handler {
  const { io, claims } = o;
  const root = new RootHash(ctx.key, { maxIntervals: MAX_TRACKED_INTERVALS });
  const session = { size: ctx.size, blockSize: ctx.blockSize };
  // zstd DATA only for a client that said it decompresses it: while our link is the
  // bottleneck, or on every DATA if it asked for that.
  const compression = new CompressPolicy({
    mode: !o.open.clientZstd ? "never" : o.open.compressAlways ? "always" : "auto",
    backlog: io.sendBacklog,
  });
  const reserve = async (bytes: number) => {
    const hold = await io.memory.hold(bytes, { shared: true });
    return () => hold.release();
  };
  // READ_DIFFs that read and send at once; more wait (as tasks), so the receive loop goes on
  // reading (the SUB_DIGESTS a refining READ_DIFF waits for) while these run.
  const working = new ByteWindow(PULL_TASKS);
  const policy = new RefinePolicy();
  // Stamped before any READ_DIFF is read; a failure (the file changed since it was opened)
  // is the first READ_DIFF's ERROR.
  const watch = observed(SourceWatch.start(ctx.store, { first: o.sourceStamp }));
  const checkSource = async () => (await watch)?.check();
  const pause = TestPause.fromEnv();
  return async (m) => {
    switch (m.type) {
      case "READ_DIFF": {
        checkRange(m, session);
        claims.claim(m);
        // The request's digests and the source's, for the whole task.
        const hold = await io.memory.hold(2 * m.digests.length, { shared: false });
        return async () => {
          let slot = false;
          try {
            await pause?.beforeRange(io.signal);
            // Waiting for a slot is no work of ours: the working READ_DIFFs say whether the
            // session is busy (one waiting for the client's SUB_DIGESTS is not), else a client
            // that never answers would never be idle.
            io.activity?.end();
            try {
              await working.acquire(1, io.signal);
            } finally {
              io.activity?.begin();
            }
            slot = true;
            const src = await diffRange(ctx, { offset: m.offset, length: m.length, dst: m.digests }, {
              zstdLevel: () => compression.level(),
              dryRun: o.open.dryRun,
              refine: o.refine,
              roundTrips: () => policy.roundTrips(),
              lookahead: LOOKAHEAD_JOBS,
              reserve,
              // A refine op waits for the client's sub-digests: this stream sends nothing else meanwhile.
              emit: (op, level) => {
                compression.observe();
                return op.kind === "refine"
                  ? refineInStream(ctx, op, { cookie: m.cookie, send: io.send, refines: o.refines, activity: io.activity, zstdLevel: compression.level(), dryRun: o.open.dryRun, policy, sent: (p, l) => compression.sentOp(p, l) })
                  : io.send(encodeOp(op, m.cookie)).then(() => {
                    compression.sentOp(op, level);
                    return SENT;
                  });
              },
            });
            await pause?.afterRange(m, io.signal);
            // ERROR ESTALE instead of RANGE_DONE: what this range sent is no single image.
            await checkSource();
            root.add(m.offset / ctx.blockSize, src);
            claims.settle(m.offset); // before the reply: a COMMIT that follows it must see the range closed
            await io.reply(encode({ type: "RANGE_DONE", cookie: m.cookie, offset: m.offset, length: m.length }), m.cookie);
            o.progress?.rangeDone(m.length);
          } finally {
            claims.settle(m.offset); // idempotent; here for the failure paths
            if (slot) working.release(1);
            hold.release();
            pause?.release();
          }
        };
      }
      case "COMMIT":
        // Every range was read: a source unchanged now is the image the client received.
        return async () => {
          await checkSource();
          await commit(ctx, { root, request: m, handler: o });
        };
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
      case "REFINE":
      case "SUB_DIGESTS":
      case "PATCH":
        throw new ProtocolError(`${m.type} is not a request a pull source accepts`);
      default:
        throw new ProtocolError(`unhandled ${(m satisfies never as Message).type}`);
    }
  };
}
