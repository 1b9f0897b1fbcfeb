/**
 * Images and checks for the crash tests (test/crash/): two different sparse sources for one
 * destination name, the CLI as a child with its own config and state folders, and the
 * "old or new" check.
 *
 * Invariants: images are sparse and small (tens of MiB apparent, a few MiB of data in
 * several extents); A and B differ in size, in data, in holes over data and data over holes,
 * and share some identical extents, so a sync between them writes, punches and resizes.
 */
import { type ChildProcess } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { makeCliPair } from "./cli-setup.ts";
import { type CliResult, finished, spawnCli } from "./network.ts";
import { allocatedBytesOf, type DataChunk, fileHash, makeSparseFile } from "./sparse.ts";

export const MiB = 1 << 20;
/** ssync's default block size: "allocated ≤ the source's + one block". */
export const BLOCK = 65536;

export interface Image {
  readonly file: string;
  readonly hash: string;
  readonly size: number;
}

/**
 * Sources A and B in `dir`, `scale` MiB per unit (default 1: A is 64 MiB apparent with 16 MiB
 * of data, B 62 MiB with 17 MiB; `sameSize`: B as large as A, for block devices). Random
 * data: incompressible, so the wire carries it all. `scale` keeps extents block-aligned
 * down to 1/16 (64 KiB units).
 */
export function makeImagePair(
  dir: string,
  options: { scale?: number; sameSize?: boolean } = {},
): { a: Image; b: Image } {
  const u = (options.scale ?? 1) * MiB;
  const shared = { offset: 20 * u, length: 2 * u };
  const aChunks: DataChunk[] = [
    { offset: 0, length: 2 * u, fill: "random" },
    { offset: 8 * u, length: 3 * u, fill: "random" },
    { offset: 30 * u, length: 3 * u, fill: "random" },
    { offset: 44 * u, length: 2 * u, fill: "random" },
    { offset: 56 * u, length: 4 * u, fill: "random" },
  ];
  const bChunks: DataChunk[] = [
    { offset: 1 * u, length: 3 * u, fill: "random" }, // overlaps A's first extent and its hole
    { offset: 8 * u, length: 3 * u, fill: "random" }, // same place, other data
    { offset: 34 * u, length: 3 * u, fill: "random" }, // data where A has a hole (A's 30..33 becomes one)
    { offset: 44 * u, length: 2 * u, fill: "random" },
    { offset: 58 * u, length: 4 * u, fill: "random" }, // up to B's end: A's tail is cut off
  ];
  const a = path.join(dir, "a.img");
  const b = path.join(dir, "b.img");
  makeSparseFile(a, { size: 64 * u, chunks: aChunks });
  makeSparseFile(b, { size: (options.sameSize ? 64 : 62) * u, chunks: bChunks });
  // One extent identical in both (blocks a sync leaves alone).
  const fd = fs.openSync(a, "r+");
  const fdB = fs.openSync(b, "r+");
  try {
    const same = crypto.randomBytes(shared.length);
    fs.writeSync(fd, same, 0, same.length, shared.offset);
    fs.writeSync(fdB, same, 0, same.length, shared.offset);
  } finally {
    fs.closeSync(fd);
    fs.closeSync(fdB);
  }
  return { a: imageOf(a), b: imageOf(b) };
}

export function imageOf(file: string): Image {
  return { file, hash: fileHash(file), size: fs.statSync(file).size };
}

/** Copies `from` to `to` sparsely (holes stay holes), replacing `to`. */
export function copySparse(from: string, to: string): void {
  const src = fs.openSync(from, "r");
  const dst = fs.openSync(to, "w");
  try {
    const size = fs.fstatSync(src).size;
    fs.ftruncateSync(dst, size);
    const buf = new Uint8Array(BLOCK);
    for (let pos = 0; pos < size; pos += BLOCK) {
      const n = fs.readSync(src, buf, 0, BLOCK, pos);
      if (buf.subarray(0, n).some((x) => x !== 0)) fs.writeSync(dst, buf, 0, n, pos);
    }
    fs.fsyncSync(dst);
  } finally {
    fs.closeSync(src);
    fs.closeSync(dst);
  }
}

/** What a destination holds, compared with the images before and after one sync. */
export type Found = "old" | "new" | "absent" | "neither";

/** `old` null: the destination did not exist before the sync (absent is then "old"). */
export function classify(file: string, expected: { old: string | null; new: string }): Found {
  if (!fs.existsSync(file)) return "absent";
  const h = fileHash(file);
  if (h === expected.new) return "new";
  if (expected.old !== null && h === expected.old) return "old";
  return "neither";
}

/** Whether `found` is allowed: exactly the old image or exactly the new one. */
export function oldOrNew(found: Found, expected: { old: string | null }): boolean {
  return found === "new" || (expected.old === null ? found === "absent" : found === "old");
}

/** Names in `dir` that a finished sync must not leave behind (journals, partial files). */
export function leftovers(dir: string): string[] {
  return fs.readdirSync(dir).filter((n) => /\.ssync-(journal|partial)$/.test(n));
}

/** The destination after a rerun: identical to `src`, and sparse (≤ the source's + one block). */
export function checkIdentical(dst: string, src: Image): string[] {
  const problems: string[] = [];
  if (!fs.existsSync(dst)) return [`${path.basename(dst)} is missing`];
  if (fileHash(dst) !== src.hash) problems.push(`${path.basename(dst)} differs from ${path.basename(src.file)}`);
  const extra = allocatedBytesOf(dst) - allocatedBytesOf(src.file);
  if (extra > BLOCK) problems.push(`${path.basename(dst)} allocates ${extra} B more than its source`);
  return problems;
}

/** The environment every ssync child of a crash test gets: its own config and state dirs. */
export interface CliEnv {
  readonly config: string;
  readonly env: Record<string, string>;
}

export function cliEnv(dir: string, name: string): CliEnv {
  const config = path.join(dir, `${name}-config`);
  const state = path.join(dir, `${name}-state`);
  fs.mkdirSync(path.join(config, "ssync"), { recursive: true });
  fs.mkdirSync(state, { recursive: true });
  return { config, env: { XDG_STATE_HOME: state } };
}

/** A client and a listener in `dir` (config and state folders each), the client's key authorized; root = dir/root. */
export async function networkEnvs(dir: string): Promise<{ root: string; client: CliEnv; server: CliEnv }> {
  const client = cliEnv(dir, "client");
  const server = cliEnv(dir, "server");
  const { root } = await makeCliPair(dir, { client: client.config, server: server.config });
  return { root, client, server };
}

/** `scripts/ssync ARGS` as a child with `who`'s config and state (plus `env`). */
export function spawnSsync(args: string[], who: CliEnv, env: Record<string, string> = {}): ChildProcess {
  return spawnCli(args, { config: who.config, env: { ...who.env, ...env } });
}

/** Runs `scripts/ssync ARGS` to completion (bounded by `timeoutMs`, default 60 s). */
export function ssync(
  args: string[],
  who: CliEnv,
  options: { env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<CliResult> {
  return finished(spawnSsync(args, who, options.env), options.timeoutMs ?? 60_000);
}

/**
 * SIGKILL by pid. Deno's ChildProcess.kill() sends only its first signal; by pid always
 * works. A child that has already exited is left alone.
 */
export function killHard(child: ChildProcess): boolean {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return false;
  try {
    process.kill(child.pid, "SIGKILL");
    return true;
  } catch {
    return false; // exited in between
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The last stderr line of a CLI run, for messages. */
export function lastLine(r: CliResult): string {
  return (r.stderr.trim().split("\n").pop() ?? "").slice(0, 300);
}
