/**
 * Fuzzing a whole server session: serveSession over memoryPair, on a real file in a temp dir
 * (openDestination for push, openSource for pull, wrapped in RecordingStorage), driven by
 * seeded sequences of valid, mutated and random messages, in push and pull, dry run and not.
 * For every seed:
 *
 * 1. nothing crashes and no promise rejection goes unhandled;
 * 2. the session ends within a bound once the client stops (END, an abort, or silence: the
 *    idle timeout);
 * 3. nothing is written outside the ranges the session answered (SIGS_REPLY sent), nothing at
 *    all in a pull or a dry run, and the bytes outside those ranges are unchanged;
 * 4. what a pull server sends is the source's bytes; a push that got COMMIT_OK left exactly
 *    the bytes the client wrote;
 * 5. memory is bounded: the listener's budget is given back in full at the session's end, and
 *    the process's RSS stays bounded over the run;
 * 6. no ERROR reply says EIO, and the session's error is never a TypeError or RangeError
 *    (an internal failure, not the peer's).
 *
 * A sequence is either an honest session with now and then a mutated message, or a random
 * walk over valid and invalid requests; the seed decides.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import process from "node:process";
import { decode, encode } from "../../protocol/codec.ts";
import { DIGEST_SIZE, HEADER_SIZE, MAX_RANGE_BLOCKS, MessageCode } from "../../protocol/constants.ts";
import type { ErrorMessage, Message, OpenMessage } from "../../protocol/messages.ts";
import { type BlockHasher, createBlockHasher, digestBlocks } from "../../src/engine/block-hash.ts";
import { RootHash } from "../../src/engine/root-hash.ts";
import { WorkerPool } from "../../src/engine/worker-pool.ts";
import { IdleTimeoutChannel } from "../../src/net/idle-timeout-channel.ts";
import { compress, decompress, initZstd } from "../../src/platform/zstd.ts";
import { memoryPair } from "../../src/session/memory-pair.ts";
import { SERVER_TASKS } from "../../src/session/session-limits.ts";
import { ByteWindow } from "../../src/util/byte-window.ts";
import { RecordingChannel } from "../helpers/recording-channel.ts";
import { Driver, openRequest, serveFile } from "../helpers/session-driver.ts";
import { makeSparseFile, readRange, withTempDir } from "../helpers/sparse.ts";
import { forEachSeed, fuzzIterations, type Random, watchUnhandledRejections } from "./random.ts";

const ITERATIONS = fuzzIterations(60);
const IDLE_MS = 300;
/** After the client stops, the session must end within this. */
const END_WITHIN_MS = 10_000;
const BUDGET = 64 << 20;
const RSS_GROWTH_LIMIT = 512 << 20;

let pool: WorkerPool;
before(async () => {
  pool = new WorkerPool({ size: 2 });
  await initZstd();
});
after(async () => {
  await pool[Symbol.asyncDispose]();
});

interface OpenRange {
  offset: number;
  length: number;
  /** The destination's digests as the client's writes change them. */
  digests: Uint8Array;
  written: Set<number>;
}

/** What one seed set up: the file, the session's shape, the bytes before. */
interface Case {
  mode: "push" | "pull";
  dryRun: boolean;
  bs: number;
  /** Final size: push, what OPEN says; pull, the source's size. */
  size: number;
  original: Uint8Array;
  key: Uint8Array;
  hasher: BlockHasher;
}

/** The hand client: sends what the seed says, reads every reply, checks what a pull sends. */
class FuzzClient {
  readonly rng: Random;
  readonly driver: Driver;
  readonly c: Case;
  #cookie = 10;
  /** Blocks the client claimed with a range it believes valid. */
  #claimed = new Set<number>();
  readonly open = new Map<number, OpenRange>();
  readonly waitingReply = new Map<number, number>();
  readonly closed: { first: number; digests: Uint8Array }[] = [];
  readonly pullDone = new Map<number, number>();
  readonly pullAsked = new Map<number, number>();
  /** Push, not a dry run: the bytes the file must hold after COMMIT_OK. */
  expected: Uint8Array | undefined;
  readonly errors: ErrorMessage[] = [];
  readonly problems: string[] = [];
  committed = false;
  ended: "END" | "CLOSED" | undefined;
  stopReading = false;
  #waiters: (() => void)[] = [];
  readonly reading: Promise<void>;

  constructor(rng: Random, driver: Driver, c: Case) {
    this.rng = rng;
    this.driver = driver;
    this.c = c;
    if (c.mode === "push" && !c.dryRun) {
      this.expected = new Uint8Array(c.size);
      this.expected.set(c.original.subarray(0, Math.min(c.size, c.original.length)));
    }
    this.reading = this.#read();
  }

  get totalBlocks(): number {
    return Math.ceil(this.c.size / this.c.bs);
  }

  cookie(): number {
    // Now and then one still in flight (a violation), or one already answered (allowed).
    if (this.rng.chance(0.02)) return this.rng.range(10, this.#cookie);
    return this.#cookie++;
  }

  async #read(): Promise<void> {
    while (!this.stopReading) {
      const r = await this.driver.next();
      if (r === "END" || r === "CLOSED") {
        this.ended = r;
        break;
      }
      this.#handle(r);
      for (const w of this.#waiters.splice(0)) w();
    }
    for (const w of this.#waiters.splice(0)) w();
  }

  #handle(m: Message): void {
    const { c } = this;
    switch (m.type) {
      case "SIGS_REPLY": {
        const length = this.waitingReply.get(m.offset);
        this.waitingReply.delete(m.offset);
        if (length === m.length) this.open.set(m.offset, { offset: m.offset, length: m.length, digests: m.digests.slice(), written: new Set() });
        break;
      }
      case "DATA": {
        const source = this.sourceBytes(m.offset, m.length);
        if (m.payload === undefined) {
          if (!c.dryRun) this.problems.push(`DATA at ${m.offset} without payload outside a dry run`);
          break;
        }
        const bytes = m.zstd ? decompress(m.payload, m.length) : m.payload;
        if (!sameBytes(bytes, source)) this.problems.push(`DATA [${m.offset}, +${m.length}) is not the source's bytes`);
        break;
      }
      case "ZERO":
        if (!this.sourceBytes(m.offset, m.length).every((b) => b === 0)) this.problems.push(`ZERO [${m.offset}, +${m.length}) over source data`);
        break;
      case "RANGE_DONE":
        if (this.pullAsked.get(m.offset) === m.length) this.pullDone.set(m.offset, m.length);
        break;
      case "COMMIT_OK":
        this.committed = true;
        break;
      case "ERROR":
        this.errors.push(m);
        break;
      default:
        break;
    }
  }

  /** The source's bytes (pull: the server's file), zeros past its end. */
  sourceBytes(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    if (offset < this.c.original.length) out.set(this.c.original.subarray(offset, Math.min(this.c.original.length, offset + length)));
    return out;
  }

  /** Resolves at the next reply, the end of the session, or after `ms`. */
  tick(ms = 15): Promise<void> {
    if (this.ended || this.stopReading) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.#waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Waits (bounded) until `done()` or the session ended. */
  async until(done: () => boolean, ms = 2000): Promise<void> {
    const end = Date.now() + ms;
    while (!done() && !this.ended && !this.stopReading && Date.now() < end) await this.tick(50);
  }

  /** Sends `m`, now and then mutated into something else; false once the connection is gone. */
  async send(m: Message, mutateChance = 0.03): Promise<boolean> {
    const rec = encode(m);
    return await this.driver.channel.send(this.rng.chance(mutateChance) ? mutate(this.rng, rec) : rec).then(() => true, () => false);
  }

  /** An unclaimed run of blocks as a range the server should accept, or undefined. */
  freshRange(maxBlocks: number): { offset: number; length: number } | undefined {
    const total = this.totalBlocks;
    if (total === 0) return undefined;
    for (let tries = 0; tries < 8; tries++) {
      const first = this.rng.int(total);
      if (this.#claimed.has(first)) continue;
      let end = first + 1;
      const want = this.rng.range(1, maxBlocks);
      while (end < total && end - first < want && !this.#claimed.has(end)) end++;
      return this.claim(first, end);
    }
    return undefined;
  }

  claim(first: number, end: number): { offset: number; length: number } {
    for (let b = first; b < end; b++) this.#claimed.add(b);
    const offset = first * this.c.bs;
    return { offset, length: Math.min(this.c.size, end * this.c.bs) - offset };
  }

  /** A valid write inside an open range (DATA raw or zstd, ZERO, or a dry run's DATA without payload). */
  validWrite(): Message | undefined {
    const { c, rng } = this;
    const ranges = [...this.open.values()];
    if (ranges.length === 0) return undefined;
    const r = rng.pick(ranges);
    const blocks = Math.ceil(r.length / c.bs);
    const first = rng.int(blocks);
    if (r.written.has(first)) return undefined;
    let end = first + 1;
    const want = rng.range(1, 4);
    while (end < blocks && end - first < want && !r.written.has(end)) end++;
    const offset = r.offset + first * c.bs;
    const length = Math.min(r.offset + r.length, r.offset + end * c.bs) - offset;
    const kind = rng.int(c.dryRun ? 5 : 4);
    const bytes = kind === 0 ? new Uint8Array(length) : kind === 1 ? new Uint8Array(length).fill(rng.range(1, 255)) : rng.bytes(length);
    if (kind === 2) bytes.fill(0, 0, rng.int(length)); // a zero head: pages to punch inside a data block
    for (let b = first; b < end; b++) r.written.add(b);
    if (kind === 4) {
      r.digests.fill(0xff, first * DIGEST_SIZE, end * DIGEST_SIZE);
      return { type: "DATA", cookie: this.cookie(), offset, length, payload: undefined, zstd: false };
    }
    r.digests.set(digestBlocks(c.hasher, bytes, c.bs, offset / c.bs), first * DIGEST_SIZE);
    this.expected?.set(bytes, offset);
    if (kind === 0 && rng.chance(0.6)) return { type: "ZERO", cookie: this.cookie(), offset, length };
    if (rng.chance(0.5)) return { type: "DATA", cookie: this.cookie(), offset, length, payload: compress(bytes, 1), zstd: true };
    return { type: "DATA", cookie: this.cookie(), offset, length, payload: bytes, zstd: false };
  }

  /** RANGE_DONE for an open range (its exact length). */
  closeRange(r: OpenRange): Message {
    this.open.delete(r.offset);
    this.closed.push({ first: r.offset / this.c.bs, digests: r.digests });
    return { type: "RANGE_DONE", cookie: this.cookie(), offset: r.offset, length: r.length };
  }

  /** The root the client believes in: the closed ranges' digests (push) or the source's (pull). */
  root(): Uint8Array {
    const { c } = this;
    const root = new RootHash(c.key);
    if (c.mode === "push") {
      for (const r of this.closed) root.add(r.first, r.digests);
    } else {
      for (const [offset, length] of this.pullDone) root.add(offset / c.bs, digestBlocks(c.hasher, this.sourceBytes(offset, length), c.bs, offset / c.bs));
    }
    return root.finish(c.size, c.bs);
  }

  /** The destination's digests the pull client sends: the source's, some changed. */
  pullDigests(r: { offset: number; length: number }): Uint8Array {
    const d = digestBlocks(this.c.hasher, this.sourceBytes(r.offset, r.length), this.c.bs, r.offset / this.c.bs);
    for (let b = 0; b < d.length / DIGEST_SIZE; b++) {
      if (this.rng.chance(0.5)) continue;
      if (this.rng.chance(0.5)) d.fill(0, b * DIGEST_SIZE, (b + 1) * DIGEST_SIZE);
      else d.set(nonZeroDigest(this.rng), b * DIGEST_SIZE);
    }
    return d;
  }
}

function nonZeroDigest(rng: Random): Uint8Array {
  const d = rng.bytes(DIGEST_SIZE);
  d[0] |= 1;
  return d;
}

function decodeOrUndefined(rec: Uint8Array): Message | undefined {
  try {
    return decode(rec);
  } catch {
    return undefined;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function mutate(rng: Random, rec: Uint8Array): Uint8Array {
  const r = rec.slice();
  switch (rng.int(4)) {
    case 0:
      r[rng.int(Math.min(r.length, HEADER_SIZE))] ^= 1 << rng.int(8);
      return r;
    case 1:
      r[rng.int(r.length)] = rng.int(256);
      return r;
    case 2:
      return r.subarray(0, rng.int(r.length));
    default: {
      // A plausible header over a random body.
      const body = rng.bytes(rng.int(64));
      const out = new Uint8Array(HEADER_SIZE + body.length);
      out.set(r.subarray(0, HEADER_SIZE));
      out.set(body, HEADER_SIZE);
      new DataView(out.buffer).setUint32(24, body.length);
      return out;
    }
  }
}

/** Something an honest client never sends: a random request, a wrong-direction message, garbage. */
function junk(client: FuzzClient): Message | Uint8Array {
  const { rng, c } = client;
  const span = () => {
    const offset = rng.chance(0.5) ? rng.int(client.totalBlocks + 2) * c.bs : rng.int(c.size + 10_000);
    return { offset, length: rng.chance(0.5) ? rng.range(1, 8) * c.bs : rng.range(1, 3 * c.bs) };
  };
  const cookie = client.cookie();
  switch (rng.int(9)) {
    case 0:
      return { type: "SIGS", cookie, ...span() };
    case 1:
      return { type: "ZERO", cookie, ...span() };
    case 2: {
      const s = span();
      const length = Math.min(s.length, 3 * c.bs);
      return { type: "DATA", cookie, offset: s.offset, length, payload: rng.chance(0.5) ? rng.bytes(rng.range(1, length)) : rng.bytes(length), zstd: rng.chance(0.5) };
    }
    case 3:
      return { type: "RANGE_DONE", cookie, ...span() };
    case 4: {
      const s = span();
      const blocks = Math.max(1, Math.min(MAX_RANGE_BLOCKS, Math.ceil(s.length / c.bs)));
      const digests = new Uint8Array(blocks * DIGEST_SIZE);
      for (let b = 0; b < blocks; b++) if (rng.chance(0.5)) digests.set(nonZeroDigest(rng), b * DIGEST_SIZE);
      return { type: rng.pick(["READ_DIFF", "SIGS_REPLY"] as const), cookie, ...s, digests };
    }
    case 5:
      return { type: rng.pick(["ACK", "FLUSH"] as const), cookie };
    case 6:
      return { type: "COMMIT", cookie, root: rng.chance(0.5) ? client.root() : rng.bytes(16) };
    case 7:
      return rng.pick<Message>([
        { type: "OPEN_OK", cookie, size: c.size, zstd: true, kind: "file" },
        { type: "ERROR", cookie, code: "EIO", message: "no" },
        { type: "COMMIT_OK", cookie, root: new Uint8Array(16), counters: { bytesRead: 0, holeBytesSkipped: 0, bytesWritten: 0, bytesPunched: 0 } },
        openRequest({ mode: c.mode, size: c.size }),
      ]);
    default: {
      const rec = rng.bytes(HEADER_SIZE + rng.int(40));
      const v = new DataView(rec.buffer);
      v.setUint16(0, rng.range(1, Object.keys(MessageCode).length));
      v.setUint32(24, rec.length - HEADER_SIZE);
      return rec;
    }
  }
}

async function sendJunk(client: FuzzClient): Promise<boolean> {
  const j = junk(client);
  if (j instanceof Uint8Array) return await client.driver.channel.send(j).then(() => true, () => false);
  return await client.send(j, 0.3);
}

/** An honest session (ranges in order, writes, RANGE_DONE, FLUSH, COMMIT), now and then mutated. */
async function honest(client: FuzzClient): Promise<void> {
  const { rng, c } = client;
  const mutation = rng.chance(0.5) ? 0.02 : 0;
  const pipelined: number[] = [];
  for (let first = 0; first < client.totalBlocks;) {
    const end = Math.min(client.totalBlocks, first + rng.range(1, 16));
    const r = client.claim(first, end);
    first = end;
    if (c.mode === "pull") {
      client.pullAsked.set(r.offset, r.length);
      if (!(await client.send({ type: "READ_DIFF", cookie: client.cookie(), ...r, digests: client.pullDigests(r) }, mutation))) return;
      pipelined.push(r.offset);
      if (pipelined.length > rng.range(0, 4)) await client.until(() => client.pullDone.has(pipelined.shift()!));
      continue;
    }
    client.waitingReply.set(r.offset, r.length);
    if (!(await client.send({ type: "SIGS", cookie: client.cookie(), ...r }, mutation))) return;
    await client.until(() => client.open.has(r.offset));
    const range = client.open.get(r.offset);
    if (!range) continue;
    for (let k = rng.int(4); k > 0; k--) {
      const w = client.validWrite();
      if (w && !(await client.send(w, mutation))) return;
    }
    if (rng.chance(0.3)) await client.tick();
    if (!(await client.send(client.closeRange(range), mutation))) return;
  }
  // Every range done before COMMIT (a client waits for its ACKs or RANGE_DONEs).
  await client.until(() => client.open.size === 0 && (c.mode === "push" || client.pullDone.size === client.pullAsked.size));
  await client.tick(50);
  if (c.mode === "push" && rng.chance(0.5)) await client.send({ type: "FLUSH", cookie: client.cookie() }, mutation);
  if (!(await client.send({ type: "COMMIT", cookie: client.cookie(), root: client.root() }, mutation))) return;
  await client.until(() => client.committed || client.errors.length > 0);
}

/**
 * A flood: SIGS for more small ranges than there are task slots, at once, with a bad
 * RANGE_DONE or junk among the last ones (what used to reach an unobserved rejection: the
 * server made the promise on arrival and awaited it only once a slot was free).
 */
async function flood(client: FuzzClient): Promise<boolean> {
  const { rng, c } = client;
  const count = SERVER_TASKS + rng.range(1, 8);
  const bad = new Set(Array.from({ length: rng.range(1, 3) }, () => rng.range(SERVER_TASKS - 2, count)));
  for (let k = 0; k < count; k++) {
    let sent = true;
    if (bad.has(k)) {
      sent = rng.chance(0.6)
        ? await client.send({ type: "RANGE_DONE", cookie: client.cookie(), offset: rng.int(client.totalBlocks) * c.bs, length: c.bs }, 0)
        : await sendJunk(client);
    } else {
      const r = client.freshRange(1);
      if (!r) break;
      client.waitingReply.set(r.offset, r.length);
      sent = await client.send({ type: "SIGS", cookie: client.cookie(), ...r }, 0);
    }
    if (!sent) return false;
  }
  return true;
}

/** A random walk over valid and invalid requests; now and then a burst sent without waiting. */
async function randomWalk(client: FuzzClient): Promise<void> {
  const { rng, c } = client;
  let burst = 0;
  for (let step = rng.range(5, 60); step > 0 && !client.ended; step--) {
    if (burst === 0 && rng.chance(0.05)) burst = rng.range(20, 90);
    if (c.mode === "push" && burst === 0 && client.totalBlocks > SERVER_TASKS && rng.chance(0.1)) {
      if (!(await flood(client))) return;
      continue;
    }
    if (burst > 0) {
      burst--;
      step++;
    } else if (rng.chance(0.3)) {
      await client.tick();
    }
    let ok = true;
    const roll = rng.next();
    if (roll < 0.06) {
      ok = await sendJunk(client);
    } else if (c.mode === "pull") {
      if (roll < 0.95) {
        const r = client.freshRange(rng.chance(0.1) ? 64 : 8);
        if (!r) continue;
        client.pullAsked.set(r.offset, r.length);
        ok = await client.send({ type: "READ_DIFF", cookie: client.cookie(), ...r, digests: client.pullDigests(r) });
      } else {
        ok = await client.send({ type: "COMMIT", cookie: client.cookie(), root: client.root() });
      }
    } else if (roll < 0.45) {
      const r = client.freshRange(rng.chance(0.1) ? 64 : 8);
      if (!r) continue;
      client.waitingReply.set(r.offset, r.length);
      ok = await client.send({ type: "SIGS", cookie: client.cookie(), ...r });
    } else if (roll < 0.75) {
      const w = client.validWrite();
      if (!w) continue;
      ok = await client.send(w);
    } else if (roll < 0.9) {
      const ranges = [...client.open.values()];
      if (ranges.length === 0) continue;
      ok = await client.send(client.closeRange(rng.pick(ranges)));
    } else if (roll < 0.95) {
      ok = await client.send({ type: "FLUSH", cookie: client.cookie() });
    } else {
      ok = await client.send({ type: "COMMIT", cookie: client.cookie(), root: client.root() });
    }
    if (!ok) return;
  }
}

/** A sparse file of `size` bytes: random data, zero-filled and constant chunks, holes; or all data. */
function makeFile(rng: Random, file: string, size: number): void {
  if (rng.chance(0.2)) return makeSparseFile(file, { size, chunks: [{ offset: 0, length: size, fill: "random" }] });
  const chunks = [];
  for (let k = rng.int(5); k > 0 && size > 0; k--) {
    const offset = rng.int(size);
    const length = Math.min(size - offset, rng.range(1, 8 * 4096));
    chunks.push({ offset, length, fill: rng.pick<number | "random">(["random", "random", 0, 0x5a]) });
  }
  makeSparseFile(file, { size, chunks });
}

/** [offset, end) intervals of the ranges the server answered (SIGS_REPLY it sent). */
function answeredRanges(wire: RecordingChannel): [number, number][] {
  return wire.ofType("sent", "SIGS_REPLY").map((m) => [m.offset!, m.offset! + m.length!]);
}

function inside(ranges: [number, number][], offset: number, length: number): boolean {
  return ranges.some(([a, b]) => offset >= a && offset + length <= b);
}

async function deadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(what)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

async function fullyReleased(window: ByteWindow): Promise<boolean> {
  const all = window.acquire(BUDGET);
  const got = await Promise.race([all.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 100))]);
  all.then(() => window.release(BUDGET), () => {});
  return got;
}

test("fuzz: a whole server session under valid, mutated and random messages", { timeout: 60_000 + ITERATIONS * 1000 }, async () => {
  const rssStart = process.memoryUsage().rss;
  let rssPeak = rssStart;
  const seen = { committed: 0, closed: 0, ended: 0, silent: 0, errors: 0 };
  const unhandled = await watchUnhandledRejections(async () => {
    await forEachSeed({ iterations: ITERATIONS, firstSeed: 5000, name: "server session" }, async (rng) => {
      await withTempDir(async (dir) => {
        const mode = rng.pick(["push", "pull"] as const);
        const dryRun = rng.chance(0.3);
        const bs = rng.pick([4096, 4096, 8192, 16384]);
        const big = rng.chance(0.15); // room for more ranges than task slots
        const fileSize = big ? rng.range(80, 160) * bs : rng.chance(0.1) ? 0 : rng.int(48 * bs) + (rng.chance(0.5) ? 0 : rng.int(bs));
        const file = path.join(dir, "f.img");
        if (big) makeSparseFile(file, { size: fileSize, chunks: [{ offset: 0, length: fileSize, fill: "random" }] });
        else if (mode === "pull" || rng.chance(0.85)) makeFile(rng, file, fileSize);
        const original = fs.existsSync(file) ? new Uint8Array(fs.readFileSync(file)) : new Uint8Array(0);
        const pushSize = rng.chance(0.7) ? fileSize : rng.int(48 * bs);
        const key = rng.bytes(32);
        const c: Case = { mode, dryRun, bs, size: mode === "push" ? pushSize : original.length, original, key, hasher: await createBlockHasher("hmac-sha256", key) };

        const [clientEnd, serverEnd] = memoryPair({ maxBytes: rng.pick([64 << 10, 1 << 20, 16 << 20]) });
        const wire = new RecordingChannel(serverEnd);
        const idle = new IdleTimeoutChannel(wire, { timeoutMs: IDLE_MS });
        const memory = new ByteWindow(BUDGET);
        const served = serveFile(file, { pool, channels: [clientEnd, idle], memory, activity: idle.activity });
        const client = new FuzzClient(rng, served.driver, c);
        const open: OpenMessage = openRequest({ mode, size: mode === "push" ? pushSize : 0, dryRun, blockSize: bs, key, clientZstd: rng.chance(0.7) });
        // Now and then a mutated OPEN: what the server was told is what decodes from the bytes sent.
        const openRecord = rng.chance(0.05) ? mutate(rng, encode(open)) : encode(open);
        const told = decodeOrUndefined(openRecord);
        if (await clientEnd.send(openRecord).then(() => true, () => false)) {
          await client.until(() => false, 0); // let OPEN_OK arrive before the first request, mostly
          await client.tick(30);
          if (big && mode === "push" && rng.chance(0.4)) await flood(client).then(() => randomWalk(client));
          else if (rng.chance(0.5)) await honest(client);
          else await randomWalk(client);
        }
        // The client stops: an orderly END, an abort, or silence (the server's idle timeout).
        const how = rng.pick(["end", "end", "abort", "silent"] as const);
        if (how === "end") clientEnd.close();
        else if (how === "abort") clientEnd.close(new Error("the fuzz client gave up"));
        else client.stopReading = true;
        const result = await deadline(served.result, END_WITHIN_MS, `the session did not end within ${END_WITHIN_MS} ms after the client's ${how}`);
        if (how !== "silent") await deadline(client.reading, END_WITHIN_MS, "the client's reader did not end");
        clientEnd.close(new Error("test over"));

        // 6. Failures are the peer's, never internal.
        // (OPEN's own ERROR is the storage's word on a size the seed may have made absurd.)
        for (const e of client.errors) if (e.cookie !== open.cookie) assert.notEqual(e.code, "EIO", `ERROR EIO: ${e.message}`);
        assert.ok(!(result.error instanceof TypeError) && !(result.error instanceof RangeError), `session error: ${result.error?.stack}`);
        // 4. A pull sends the source's bytes.
        assert.deepEqual(client.problems, []);
        // 3. Writes only inside answered ranges; none in a pull or a dry run.
        const store = served.store();
        const answered = answeredRanges(wire);
        if (store) {
          if (mode === "pull" || dryRun) {
            assert.deepEqual([store.writes.length, store.punches.length, store.setSizes.length], [0, 0, 0], `${mode}${dryRun ? " dry run" : ""} changed the file`);
          } else {
            for (const w of store.writes) assert.ok(inside(answered, w.offset, w.length), `write [${w.offset}, +${w.length}) outside ${JSON.stringify(answered)}`);
            for (const p of store.punches) {
              const wasZero = original.subarray(p.offset, p.offset + p.length).every((b) => b === 0);
              assert.ok(inside(answered, p.offset, p.length) || wasZero, `hole [${p.offset}, +${p.length}) punched over data outside ${JSON.stringify(answered)}`);
            }
            for (const s of store.setSizes) assert.equal(s, told?.type === "OPEN" ? told.size : NaN, "setSize only to OPEN's size");
          }
        }
        // Read no further than the bytes compared (a mutated OPEN may have made the file huge and sparse).
        const after = fs.existsSync(file)
          ? readRange(file, { offset: 0, length: Math.max(original.length, client.expected?.length ?? 0) + 1 })
          : new Uint8Array(0);
        for (let at = 0; at < Math.min(after.length, original.length); at += c.bs) {
          const n = Math.min(c.bs, original.length - at, after.length - at);
          if (!inside(answered, at, n)) assert.ok(sameBytes(after.subarray(at, at + n), original.subarray(at, at + n)), `bytes at ${at} changed outside the answered ranges`);
        }
        if (client.committed && client.expected && told?.type === "OPEN" && told.size === pushSize) {
          assert.ok(sameBytes(after, client.expected), "after COMMIT_OK the file holds what the client wrote");
        }
        // 5. The listener's budget comes back in full.
        assert.ok(await fullyReleased(memory), "the session kept part of the listener's memory budget");
        rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
        seen.committed += client.committed ? 1 : 0;
        seen.closed += client.ended === "CLOSED" ? 1 : 0;
        seen.ended += client.ended === "END" ? 1 : 0;
        seen.silent += how === "silent" ? 1 : 0;
        seen.errors += client.errors.length;
      });
    });
  });
  assert.deepEqual(unhandled, [], "unhandled rejections");
  assert.ok(rssPeak - rssStart < RSS_GROWTH_LIMIT, `RSS grew by ${Math.round((rssPeak - rssStart) / 2 ** 20)} MiB`);
  // The walk reaches every ending: commits, violations, orderly ends.
  if (ITERATIONS >= 40) assert.ok(seen.committed > 0 && seen.closed > 0 && seen.ended > 0, JSON.stringify(seen));
});
