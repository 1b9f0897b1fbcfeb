/**
 * The listener's side of a batch connection (spec "Batches (protocol 2)"): many files over
 * one connection, one handshake, counted as one session by the listener's admission.
 *
 * 1. The first record is BATCH: a version this side does not speak is answered ERROR EINVAL
 *    (no slot prefix), then END; otherwise BATCH_OK grants min(wanted, MAX_SLOTS) slots.
 * 2. From then on the SlotMux (session/slot-mux.ts) routes records by slot. The client's OPEN
 *    on a free slot starts a v1 session there (`serveFile`: serveSession with the listener's
 *    open policy, idle timeout and log line), after the slot's previous session has returned.
 *    Every slot session has its own window (SLOT_BUFFER_BYTES); their transient holds also
 *    share the batch's (BATCH_BUFFER_BYTES) and the listener's budget. The sessions running at
 *    once are all push or all pull (ModeGate): then no slot ever waits for a record of another
 *    slot, which is what keeps the shared reader from deadlocking (slot-mux.ts).
 * 3. Slot 0, the control stream: LIST, MKDIR, REMOVE, RMDIR (tree-access.ts), up to
 *    CONTROL_TASKS at once, each answered ACK, LIST_ENTRIES … LIST_ENTRIES LAST, or ERROR (the
 *    batch goes on); its cookies are its own space: one still in flight used again is a
 *    violation, as is anything that is not one of those requests.
 * 4. The client's END ends every slot; once every slot session has returned, END. A
 *    violation anywhere, the listener stopping, or the connection lost ends all of them at
 *    once. One log line per file (serveFile) and one per batch.
 */
import { decodeBatch, decodeControl, encodeBatch, encodeControl, entrySize } from "../../protocol/batch-codec.ts";
import type { ControlMessage, ControlRequest, TreeEntry } from "../../protocol/batch-messages.ts";
import { encode, ProtocolError } from "../../protocol/codec.ts";
import { BATCH_VERSION, MAX_PAYLOAD, MAX_SLOTS } from "../../protocol/constants.ts";
import type { RecordChannel } from "../net/record-channel.ts";
import type { ServerSessionResult, SessionActivity } from "../session/server-session.ts";
import { BATCH_BUFFER_BYTES, CONTROL_TASKS, SLOT_BUFFER_BYTES, SLOT_QUEUE_BYTES } from "../session/session-limits.ts";
import { type SlotChannel, SlotMux } from "../session/slot-mux.ts";
import { ByteWindow } from "../util/byte-window.ts";
import { asError, ErrnoError, errorName, messageOf } from "../util/errors.ts";
import { formatBytes } from "../util/format-bytes.ts";
import type { RecordParts } from "../util/record-parts.ts";
import { TaskGroup } from "../util/task-group.ts";
import { clip, type LogFields, type LogLevel } from "./log.ts";
import type { OpenPolicy } from "./open-for-client.ts";
import { listTree, makeFolder, removeFile, removeFolder } from "./tree-access.ts";

/** What a slot's file session gets from its batch. */
export interface BatchSlot {
  slot: number;
  /** The session's own window. */
  bufferBytes: number;
  /** The window the batch's slots share for their transient holds. */
  memory: ByteWindow;
  /**
   * Waits until the batch's running sessions are all of `mode` (ModeGate), then counts this
   * one among them until its session returns (the caller's serveFile ends it).
   */
  enterMode(mode: "push" | "pull", signal: AbortSignal | undefined): Promise<void>;
}

/**
 * The sessions running on a batch's slots are all push or all pull at any moment: a session
 * of the other mode waits (in its OPEN) until the running ones have returned, and once one
 * waits, later ones of the running mode wait behind it (no starvation). Then no slot ever
 * waits for a record of another slot (slot-mux.ts), which keeps the shared reader from
 * deadlocking.
 */
export class ModeGate {
  #mode: "push" | "pull" | undefined;
  #active = 0;
  #queue: { mode: "push" | "pull"; resolve: () => void }[] = [];

  async enter(mode: "push" | "pull", signal?: AbortSignal): Promise<void> {
    if (this.#active === 0 || (this.#mode === mode && this.#queue.length === 0)) {
      this.#mode = mode;
      this.#active++;
      return;
    }
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        const i = this.#queue.indexOf(waiter);
        if (i < 0) return;
        this.#queue.splice(i, 1);
        reject(signal!.reason);
      };
      // Admitted: the listener goes with the wait (a long batch would keep one per waited session).
      const waiter = { mode, resolve: () => (signal?.removeEventListener("abort", onAbort), resolve()) };
      this.#queue.push(waiter);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  leave(): void {
    if (--this.#active > 0 || this.#queue.length === 0) return;
    this.#mode = this.#queue[0].mode;
    while (this.#queue.length > 0 && this.#queue[0].mode === this.#mode) {
      this.#active++;
      this.#queue.shift()!.resolve();
    }
  }
}

export interface BatchServeOptions {
  /** The listener stops the batch, or the client is gone. */
  signal: AbortSignal;
  activity?: SessionActivity;
  policy: OpenPolicy;
  /** Runs one slot's v1 session (the listener's serveSession with its policy, and its log line). */
  serveFile: (channel: RecordChannel, slot: BatchSlot) => Promise<ServerSessionResult>;
  /** A line about this batch; the listener prefixes peer and key. */
  log: (message: string, fields?: LogFields, level?: LogLevel) => void;
  /** REMOVE removed the file `name` (the client's name): its signature cache entry goes with it. */
  removed?: (name: string) => void;
  /** The connection's bytes so far, for the batch's line. */
  wire: () => { bytesReceived: number; bytesSent: number };
}

interface BatchStats {
  files: number;
  ok: number;
  failed: number;
  LIST: number;
  MKDIR: number;
  REMOVE: number;
  RMDIR: number;
  refused: number;
}

/** A channel whose first record was read ahead (to tell a batch from a v1 session) and is received again first. */
export class PeekedChannel implements RecordChannel {
  #inner: RecordChannel;
  #taken = false;
  readonly first: Promise<Uint8Array | null>;

  constructor(inner: RecordChannel) {
    this.#inner = inner;
    this.first = inner.receive();
    this.first.catch(() => {});
  }

  receive(): Promise<Uint8Array | null> {
    if (this.#taken) return this.#inner.receive();
    this.#taken = true;
    return this.first;
  }

  send(record: RecordParts): Promise<void> {
    return this.#inner.send(record);
  }

  close(reason?: Error): void {
    this.#inner.close(reason);
  }

  sendBacklog(): number {
    return this.#inner.sendBacklog?.() ?? 0;
  }

  get inProcess(): boolean | undefined {
    return this.#inner.inProcess;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.#inner[Symbol.asyncDispose]();
  }
}

export async function serveBatch(channel: RecordChannel, o: BatchServeOptions): Promise<void> {
  const started = Date.now();
  const stats: BatchStats = { files: 0, ok: 0, failed: 0, LIST: 0, MKDIR: 0, REMOVE: 0, RMDIR: 0, refused: 0 };
  let granted = 0;
  let failure: Error | undefined;
  try {
    const open = decodeBatch((await channel.receive())!);
    if (open.type !== "BATCH") throw new ProtocolError(`${open.type} from a client`);
    if (open.version !== BATCH_VERSION) {
      const message = `Cannot start a batch: version ${open.version} is not supported (this listener speaks ${BATCH_VERSION})`;
      failure = new ErrnoError("EINVAL", message);
      await channel.send(encode({ type: "ERROR", cookie: 0, code: "EINVAL", message })).catch(() => {});
      channel.close();
      return;
    }
    granted = Math.min(open.slots, MAX_SLOTS);
    await channel.send(encodeBatch({ type: "BATCH_OK", cookie: 0, slots: granted }));
    failure = await runBatch(channel, granted, o, stats);
  } catch (e) {
    failure ??= asError(e);
    channel.close(failure);
  } finally {
    const wire = o.wire();
    const seconds = Math.round((Date.now() - started) / 100) / 10;
    const outcome = failure === undefined ? (stats.failed === 0 ? "ok" : `${stats.failed} failed`) : `failed: ${clip(messageOf(failure), 240)}`;
    o.log(
      `batch of ${granted} slots: ${stats.files} files (${stats.ok} committed, ${stats.failed} not), ${stats.LIST} LIST, ${stats.MKDIR} MKDIR, ` +
        `${stats.REMOVE} REMOVE, ${stats.RMDIR} RMDIR (${stats.refused} refused), wire in ${formatBytes(wire.bytesReceived)} ` +
        `out ${formatBytes(wire.bytesSent)}, ${seconds} s: ${outcome}`,
      { batch: true, slots: granted, ...stats, wireBytesIn: wire.bytesReceived, wireBytesOut: wire.bytesSent, seconds, ok: failure === undefined && stats.failed === 0, outcome },
      failure === undefined && stats.failed === 0 ? "info" : "warn",
    );
  }
}

/** Steps 2–4 once BATCH_OK is sent; resolves with the batch's failure, if it failed as a whole. */
async function runBatch(channel: RecordChannel, granted: number, o: BatchServeOptions, stats: BatchStats): Promise<Error | undefined> {
  const memory = new ByteWindow(BATCH_BUFFER_BYTES);
  const gate = new ModeGate();
  const previous = new Map<number, Promise<void>>();
  const runs = new Set<Promise<void>>();
  const mux: SlotMux = new SlotMux(channel, {
    granted,
    maxSlotBytes: SLOT_QUEUE_BYTES,
    onStart: (slot, slotChannel) => {
      const run = (previous.get(slot) ?? Promise.resolve()).then(async () => {
        stats.files++;
        let entered = false;
        const enterMode = async (mode: "push" | "pull", signal: AbortSignal | undefined) => {
          await gate.enter(mode, signal);
          entered = true;
        };
        try {
          const result = await o.serveFile(slotChannel, { slot, bufferBytes: SLOT_BUFFER_BYTES, memory, enterMode });
          if (result.committed) stats.ok++;
          else stats.failed++;
        } finally {
          if (entered) gate.leave();
        }
      }).catch((e) => mux.fail(asError(e)));
      previous.set(slot, run);
      runs.add(run);
      run.finally(() => {
        runs.delete(run);
        if (previous.get(slot) === run) previous.delete(slot);
      });
    },
  });
  const stop = () => mux.fail(asError(o.signal.reason));
  if (o.signal.aborted) stop();
  else o.signal.addEventListener("abort", stop, { once: true });
  let failure: Error | undefined;
  try {
    await controlStream(mux.control, o, stats);
  } catch (e) {
    failure = asError(e);
    mux.fail(failure);
  } finally {
    o.signal.removeEventListener("abort", stop);
  }
  // The client's END ended every slot in its direction: each session finishes and ends its own.
  while (runs.size > 0) await Promise.allSettled([...runs]);
  await mux.done;
  failure ??= mux.failure;
  if (failure === undefined) mux.end();
  return failure;
}

/** Step 3: the control stream's requests until the connection's END. */
async function controlStream(control: SlotChannel, o: BatchServeOptions, stats: BatchStats): Promise<void> {
  const group = new TaskGroup({ limit: CONTROL_TASKS });
  const inFlight = new Set<number>();
  const reply = (m: ControlMessage) => {
    inFlight.delete(m.cookie);
    return control.send(encodeControl(m));
  };
  try {
    for (;;) {
      group.throwIfFailed();
      const record = await control.receive();
      if (record === null) break;
      const m = decodeControl(record);
      if (m.type === "LIST_ENTRIES" || m.type === "ACK" || m.type === "ERROR") throw new ProtocolError(`${m.type} is not a control request`);
      if (inFlight.has(m.cookie)) throw new ProtocolError(`${m.type}: cookie ${m.cookie} is already in flight on the control stream`);
      inFlight.add(m.cookie);
      stats[m.type]++;
      await group.spawn(async () => {
        o.activity?.begin();
        try {
          await reply(await handle(m, { control, policy: o.policy, signal: group.signal, log: o.log, removed: o.removed }));
        } catch (e) {
          if (e instanceof ProtocolError || group.signal.aborted) throw e;
          stats.refused++;
          await reply({ type: "ERROR", cookie: m.cookie, code: errorName(e), message: messageOf(e) });
        } finally {
          o.activity?.end();
        }
      });
    }
    await group.wait();
  } catch (e) {
    group.fail(e);
    await group.wait().catch(() => {});
    throw e;
  }
}

/** One control request: its final reply (LIST sends the chunks before it itself). */
async function handle(
  m: ControlRequest,
  o: { control: SlotChannel; policy: OpenPolicy; signal: AbortSignal; log: BatchServeOptions["log"]; removed: BatchServeOptions["removed"] },
): Promise<ControlMessage> {
  const ack: ControlMessage = { type: "ACK", cookie: m.cookie };
  switch (m.type) {
    case "LIST": {
      // Chunks of at most MAX_PAYLOAD: each send waits for the connection (back-pressure).
      let chunk: TreeEntry[] = [];
      let bytes = 0;
      for await (const entry of listTree(m.name, o.policy, { signal: o.signal })) {
        const n = entrySize(entry);
        if (bytes + n > MAX_PAYLOAD) {
          await o.control.send(encodeControl({ type: "LIST_ENTRIES", cookie: m.cookie, last: false, entries: chunk }));
          chunk = [];
          bytes = 0;
        }
        chunk.push(entry);
        bytes += n;
      }
      return { type: "LIST_ENTRIES", cookie: m.cookie, last: true, entries: chunk };
    }
    case "MKDIR":
      makeFolder(m.name, o.policy);
      o.log(`created folder ${JSON.stringify(clip(m.name))}`, { file: clip(m.name) }, "debug");
      return ack;
    case "REMOVE":
      await removeFile(m.name, o.policy);
      o.removed?.(m.name);
      o.log(`removed ${JSON.stringify(clip(m.name))}`, { file: clip(m.name) });
      return ack;
    case "RMDIR":
      removeFolder(m.name, o.policy);
      o.log(`removed folder ${JSON.stringify(clip(m.name))}`, { file: clip(m.name) });
      return ack;
    default:
      throw new ProtocolError(`unhandled ${(m satisfies never as ControlRequest).type}`);
  }
}
