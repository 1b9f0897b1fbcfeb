/**
 * Record transport throughput on 127.0.0.1, sender and receiver in two processes of the
 * same runtime (as in real use). Prints MB/s per mode, medians of ROUNDS, and ratios against
 * node:net in the same run.
 *
 *   deno run -A --no-check scripts/transport-bench.ts [MiB] [rounds]
 *   node scripts/transport-bench.ts [MiB] [rounds]
 *
 * Modes (1 MiB records):
 *   net-raw     node:net, no crypto (write + 'drain')
 *   net-noise   NoiseRecordChannel over node:net (ChaChaPoly, fixed bench key)
 *   deno-raw    Deno.connect / Deno.listen, no crypto (Deno only)
 *   deno-noise  the same sealing and FrameReader over Deno.Conn read/write (Deno only)
 *   deno-noise-direct  the same, a body larger than the read buffer read straight into its own buffer
 *   net-noise-data-joined / -parts  DATA messages (fresh payload each) through encode() or
 *               encodeParts() into NoiseRecordChannel: the send path before and after scope 4
 * MODES=a,b picks modes.
 * A fixed key replaces the handshake: the handshake is not what is measured.
 */
import { connect, createServer, type Socket } from "node:net";
import { once } from "node:events";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { NoiseRecordChannel } from "../src/net/noise-record-channel.ts";
import { CipherState } from "../src/noise/cipher-state.ts";
import { cipherFunction } from "../src/noise/cipher-function.ts";
import { FrameReader } from "../protocol/frame-reader.ts";
import { encodeRecordWord, isEndWord, RECORD_FRAME_FORMAT } from "../protocol/record-word.ts";
import { TAG_SIZE } from "../protocol/constants.ts";
import { encode, encodeParts } from "../protocol/codec.ts";
import type { Message } from "../protocol/messages.ts";

// deno-lint-ignore no-explicit-any
const D = (globalThis as any).Deno;
const isDeno = D !== undefined;
const RECORD = 1 << 20;
const KEY_A = new Uint8Array(32).fill(1);
const KEY_B = new Uint8Array(32).fill(2);
const chacha = cipherFunction("ChaChaPoly");

function states(initiator: boolean): { send: CipherState; receive: CipherState } {
  const a = new CipherState(chacha, KEY_A);
  const b = new CipherState(chacha, KEY_B);
  return initiator ? { send: a, receive: b } : { send: b, receive: a };
}

// ------------------------------------------------------------------ senders (child process)

async function sendNetRaw(port: number, mib: number): Promise<void> {
  const socket = connect(port, "127.0.0.1");
  await once(socket, "connect");
  socket.setNoDelay(true);
  const record = new Uint8Array(RECORD).fill(7);
  for (let i = 0; i < mib; i++) {
    if (!socket.write(record)) await once(socket, "drain");
  }
  socket.end();
  await once(socket, "close");
}

async function sendNetNoise(port: number, mib: number): Promise<void> {
  const socket = connect(port, "127.0.0.1");
  await once(socket, "connect");
  const channel = new NoiseRecordChannel(socket, states(true));
  const record = new Uint8Array(RECORD).fill(7);
  for (let i = 0; i < mib; i++) await channel.send(record);
  await channel[Symbol.asyncDispose]();
}

/**
 * DATA messages as a session sends them: a fresh 1 MiB - 32 payload per record (as a worker's
 * result is), encoded whole (encode: header and payload copied into one record, the old path)
 * or as [header, payload] (encodeParts).
 */
async function sendNetNoiseData(port: number, mib: number, parts: boolean): Promise<void> {
  const socket = connect(port, "127.0.0.1");
  await once(socket, "connect");
  const channel = new NoiseRecordChannel(socket, states(true));
  const source = new Uint8Array(RECORD - 32).fill(7);
  for (let i = 0; i < mib; i++) {
    const m: Message = { type: "DATA", cookie: 1, offset: i * source.length, length: source.length, payload: source.slice(), zstd: false };
    await channel.send(parts ? encodeParts(m) : encode(m));
  }
  await channel[Symbol.asyncDispose]();
}

async function writeAll(conn: { write(b: Uint8Array): Promise<number> }, bytes: Uint8Array): Promise<void> {
  let at = 0;
  while (at < bytes.length) at += await conn.write(at === 0 ? bytes : bytes.subarray(at));
}

async function sendDenoRaw(port: number, mib: number): Promise<void> {
  const conn = await D.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  const record = new Uint8Array(RECORD).fill(7);
  for (let i = 0; i < mib; i++) await writeAll(conn, record);
  await conn.closeWrite();
  const sink = new Uint8Array(64);
  while ((await conn.read(sink)) !== null);
  conn.close();
}

async function sendDenoNoise(port: number, mib: number): Promise<void> {
  const conn = await D.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  const { send } = states(true);
  const record = new Uint8Array(RECORD).fill(7);
  const write = async (plaintext: Uint8Array, end: boolean) => {
    const header = encodeRecordWord(plaintext.length + TAG_SIZE, end);
    const { ciphertext, tag } = send.seal(header, plaintext);
    await writeAll(conn, header);
    if (ciphertext.length > 0) await writeAll(conn, ciphertext);
    await writeAll(conn, tag);
  };
  for (let i = 0; i < mib; i++) await write(record, false);
  await write(new Uint8Array(0), true);
  await conn.closeWrite();
  const sink = new Uint8Array(64);
  while ((await conn.read(sink)) !== null);
  conn.close();
}

// ------------------------------------------------------------------ receivers (this process)

async function netServer(): Promise<{ port: number; accepted: Promise<Socket>; close(): void }> {
  const server = createServer({ pauseOnConnect: true });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const accepted = once(server, "connection").then(([s]) => s as Socket);
  return { port: (server.address() as { port: number }).port, accepted, close: () => server.close() };
}

async function receiveNetRaw(socket: Socket): Promise<number> {
  let bytes = 0;
  socket.on("data", (chunk: Buffer) => void (bytes += chunk.length));
  socket.resume();
  await once(socket, "end");
  socket.end();
  return bytes;
}

async function receiveNetNoise(socket: Socket): Promise<number> {
  const channel = new NoiseRecordChannel(socket, states(false));
  let bytes = 0;
  for (;;) {
    const r = await channel.receive();
    if (r === null) break;
    bytes += r.length;
  }
  await channel[Symbol.asyncDispose]();
  return bytes;
}

async function receiveDenoRaw(conn: { read(b: Uint8Array): Promise<number | null>; close(): void }): Promise<number> {
  const buffer = new Uint8Array(RECORD);
  let bytes = 0;
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) break;
    bytes += n;
  }
  conn.close();
  return bytes;
}

async function receiveDenoNoise(conn: { read(b: Uint8Array): Promise<number | null>; close(): void }): Promise<number> {
  const { receive } = states(false);
  const frames = new FrameReader(RECORD_FRAME_FORMAT);
  // One read buffer, reused: every frame that lies in it is opened before the next read.
  const buffer = new Uint8Array(RECORD + 64 * 1024);
  let bytes = 0;
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) throw new Error("Cannot read: truncated");
    frames.push(buffer.subarray(0, n));
    for (let f = frames.next(); f !== null; f = frames.next()) {
      const split = f.body.length - TAG_SIZE;
      const header = encodeRecordWord(f.body.length, isEndWord(f.word));
      const plaintext = receive.open(header, { ciphertext: f.body.subarray(0, split), tag: f.body.subarray(split) });
      if (isEndWord(f.word)) {
        conn.close();
        return bytes;
      }
      bytes += plaintext.length;
    }
  }
}

const ALL_MODES = isDeno ? ["net-raw", "net-noise", "deno-raw", "deno-noise", "deno-noise-direct"] : ["net-raw", "net-noise"];
/**
 * Like receiveDenoNoise, but a body larger than what the read buffer holds is read straight
 * into its own allocation (no copy from a read buffer): one user-space copy, the cipher's.
 */
async function receiveDenoNoiseDirect(conn: { read(b: Uint8Array): Promise<number | null>; close(): void }): Promise<number> {
  const { receive } = states(false);
  const buffer = new Uint8Array(64 * 1024);
  let start = 0;
  let end = 0;
  const fill = async (into: Uint8Array) => {
    const n = await conn.read(into);
    if (n === null) throw new Error("Cannot read: truncated");
    return n;
  };
  let bytes = 0;
  for (;;) {
    while (end - start < 4) {
      if (start > 0) {
        buffer.copyWithin(0, start, end);
        end -= start;
        start = 0;
      }
      end += await fill(buffer.subarray(end));
    }
    const word = ((buffer[start] << 24) | (buffer[start + 1] << 16) | (buffer[start + 2] << 8) | buffer[start + 3]) >>> 0;
    start += 4;
    const length = RECORD_FRAME_FORMAT.bodyLength(word);
    let body: Uint8Array;
    if (end - start >= length) {
      body = buffer.subarray(start, start + length);
      start += length;
    } else {
      body = new Uint8Array(length);
      let got = end - start;
      body.set(buffer.subarray(start, end));
      start = end = 0;
      while (got < length) got += await fill(body.subarray(got));
    }
    const split = body.length - TAG_SIZE;
    const header = encodeRecordWord(body.length, isEndWord(word));
    const plaintext = receive.open(header, { ciphertext: body.subarray(0, split), tag: body.subarray(split) });
    if (isEndWord(word)) {
      conn.close();
      return bytes;
    }
    bytes += plaintext.length;
  }
}

const MODES = process.env.MODES ? process.env.MODES.split(",") : ALL_MODES;

async function child(mode: string, port: number, mib: number): Promise<void> {
  if (mode === "net-raw") return sendNetRaw(port, mib);
  if (mode === "net-noise") return sendNetNoise(port, mib);
  if (mode === "net-noise-data-joined") return sendNetNoiseData(port, mib, false);
  if (mode === "net-noise-data-parts") return sendNetNoiseData(port, mib, true);
  if (mode === "deno-raw") return sendDenoRaw(port, mib);
  if (mode === "deno-noise" || mode === "deno-noise-direct") return sendDenoNoise(port, mib);
  throw new Error(`Cannot bench mode ${mode}: unknown`);
}

type Round = { rate: number; send: number; receive: number };

async function round(mode: string, mib: number): Promise<Round> {
  const script = fileURLToPath(import.meta.url);
  const spawnChild = (port: number) => {
    const args = isDeno ? ["run", "-A", "--no-check", script, "child", mode, String(port), String(mib)] : [script, "child", mode, String(port), String(mib)];
    const c = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    c.stdout!.on("data", (b: Buffer) => void (out += b.toString()));
    return once(c, "exit").then(([code]) => {
      if (code !== 0) throw new Error(`Cannot bench ${mode}: the sender exited ${code}`);
      return Number(/CPU (\d+)/.exec(out)![1]);
    });
  };
  let bytes: number;
  let start: number;
  let exited: Promise<number>;
  const cpu0 = process.cpuUsage();
  if (mode.startsWith("net-")) {
    const server = await netServer();
    exited = spawnChild(server.port);
    const socket = await server.accepted;
    server.close();
    start = performance.now();
    bytes = mode === "net-raw" ? await receiveNetRaw(socket) : await receiveNetNoise(socket);
  } else {
    const listener = D.listen({ hostname: "127.0.0.1", port: 0 });
    exited = spawnChild(listener.addr.port);
    const conn = await listener.accept();
    listener.close();
    start = performance.now();
    bytes = mode === "deno-raw"
      ? await receiveDenoRaw(conn)
      : mode === "deno-noise"
      ? await receiveDenoNoise(conn)
      : await receiveDenoNoiseDirect(conn);
  }
  const seconds = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const senderCpu = await exited;
  if (bytes !== mib * RECORD) throw new Error(`Cannot bench ${mode}: received ${bytes} bytes`);
  // CPU seconds per GB, each side: robust against other load on the machine.
  return { rate: bytes / 1e6 / seconds, send: senderCpu / 1e6 / (bytes / 1e9), receive: (cpu.user + cpu.system) / 1e6 / (bytes / 1e9) };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const argv = process.argv.slice(2);
if (argv[0] === "child") {
  const cpu0 = process.cpuUsage();
  await child(argv[1], Number(argv[2]), Number(argv[3]));
  const cpu = process.cpuUsage(cpu0);
  console.log(`CPU ${cpu.user + cpu.system}`);
} else {
  const mib = Number(argv[0] ?? 256);
  const rounds = Number(argv[1] ?? 5);
  const results = new Map<string, Round[]>(MODES.map((m) => [m, []]));
  // Interleaved, so that a noisy neighbour hits every mode alike.
  for (let r = 0; r < rounds; r++) for (const m of MODES) results.get(m)!.push(await round(m, mib));
  const runtime = isDeno ? `Deno ${D.version.deno}` : `Node ${process.version}`;
  const of = (m: string, k: keyof Round) => median(results.get(m)!.map((r) => r[k]));
  const base = MODES.includes("net-noise") ? "net-noise" : MODES[0];
  console.log(`${runtime}: ${mib} MiB of 1 MiB records over 127.0.0.1, median of ${rounds}; ratios against ${base}`);
  console.log(`  mode           MB/s  ratio   CPU s/GB send  ratio   CPU s/GB receive  ratio   MB/s of each round`);
  for (const [m, xs] of results) {
    const cols = (k: keyof Round, w: number) => `${of(m, k).toFixed(k === "rate" ? 0 : 3).padStart(w)}  ×${(of(m, k) / of(base, k)).toFixed(2)}`;
    console.log(`  ${m.padEnd(11)} ${cols("rate", 7)}  ${cols("send", 13)}  ${cols("receive", 16)}   [${xs.map((x) => x.rate.toFixed(0)).join(" ")}]`);
  }
}
