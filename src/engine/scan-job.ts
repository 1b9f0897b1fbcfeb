/**
 * Jobs the worker pool runs, and what they return. They run entirely inside a worker:
 * the read, the hashing, the comparison and the compression (digest, diff); the
 * decompression, hashing and zero scan of DATA that arrived at a destination (unpack).
 *
 * Invariants:
 * - A job reads through the descriptor its store lent for the job's whole life (a job is
 *   submitted inside Storage.lend); it never opens a file by name.
 * - A job covers [offset, offset+length) of one file; offset is block-aligned and
 *   length ≤ JOB_BYTES; bytes past the file's end read as zeros.
 * - `bytesRead` counts bytes actually read from the file.
 */
import { DIGEST_SIZE, type HashAlgorithm } from "../../protocol/constants.ts";
import type { LentFile } from "../storage/storage.ts";

/** Bytes one span of a job reads at most (one read, into one buffer): bounds a job's buffers. */
export const JOB_BYTES = 1 << 20;
/**
 * Data one diff or digest job reads at most, in spans of ≤ JOB_BYTES: a range's small extents
 * go to a worker as one message, not one per extent (each costs the session's thread a post,
 * a reply and a worker's wake-up, on cores the workers keep busy).
 */
export const JOB_GROUP_BYTES = 4 << 20;
/** Blocks of a job's spans: its digest lists hold these, span after span (not its holes'). */
export function spanBlocks(spans: readonly { length: number }[], blockSize: number): number {
  let n = 0;
  for (const s of spans) n += Math.ceil(s.length / blockSize);
  return n;
}

/** A job's digest list cut into its spans' own (views, in span order). */
export function spanDigests<S extends { length: number }>(digests: Uint8Array, spans: readonly S[], blockSize: number): { span: S; digests: Uint8Array }[] {
  let at = 0;
  return spans.map((span) => {
    const n = Math.ceil(span.length / blockSize) * DIGEST_SIZE;
    return { span, digests: digests.subarray(at, at += n) };
  });
}

interface JobBase {
  file: LentFile;
  /** Ranges of the same file to ask the kernel to start reading first (read-ahead.ts). */
  advise?: { offset: number; length: number }[];
  offset: number;
  length: number;
  blockSize: number;
  hash: HashAlgorithm;
  key: Uint8Array;
}

/** Destination side: digests of the blocks; `spans` as a DiffJob's (its digests: the spans' blocks, one after the other). */
export interface DigestJob extends JobBase {
  kind: "digest";
  spans?: { offset: number; length: number }[];
}

/**
 * Source side: the blocks read once, then for each target (a destination: one, or several in a
 * fan-out) hashed under its key and compared with its digests; each target's differing blocks
 * come back as its own ops.
 *
 * With `spans`, the job covers [offset, offset+length) of which only the spans hold data (each
 * block-aligned, ≤ JOB_BYTES, ascending, within the job); the holes between them are not the
 * job's. Its digest lists (each target's `dst`, and the digests it returns) hold the spans'
 * blocks one after the other (spanBlocks), so they stay small however far apart the spans
 * are. Without, the whole job is one span (length ≤ JOB_BYTES). One job for a range's many
 * small extents costs the session's thread one message instead of one per extent.
 */
export interface DiffJob extends Omit<JobBase, "hash" | "key"> {
  kind: "diff";
  targets: DiffTarget[];
  spans?: { offset: number; length: number }[];
}

/** One destination a diff job compares against, and how its differing blocks are packed. */
export interface DiffTarget {
  hash: HashAlgorithm;
  key: Uint8Array;
  dst: Uint8Array;
  /** zstd level, or 0 to send raw. */
  zstdLevel: number;
  /** Dry run: report DATA runs without their bytes. */
  withoutPayload: boolean;
  /**
   * Refinement negotiated (spec §5.8): a differing block the destination holds as zeros goes
   * as its non-zero pages (PATCH, or DATA when every page is); one it holds with data becomes
   * a "refine" op (the session asks for its sub-digests). Absent means false.
   */
  refine?: boolean;
  /** With `refine`: blocks the destination holds with data become "refine" ops (else whole DATA). Absent means true. */
  roundTrips?: boolean;
}

/**
 * Destination side: one DATA as it arrived → the bytes to write, their block digests and
 * which PAGE-sized pages are all zero. Reads nothing: `offset` only numbers the blocks.
 * A payload that does not decompress to exactly `length` bytes fails the job with a
 * ProtocolError (the peer misbehaves).
 */
export interface UnpackJob extends Omit<JobBase, "file"> {
  kind: "unpack";
  /** The DATA payload; in a worker, a view of the pool's arena (`arenaAt`, `payloadLength`). */
  payload: Uint8Array | undefined;
  arenaAt?: number;
  payloadLength?: number;
  zstd: boolean;
  /** The zero-page map's granularity. */
  page: number;
}

export type ScanJob = DigestJob | DiffJob | UnpackJob | SubDigestJob | PatchJob;

/** Destination side, answering REFINE: one sub-digest per SUB_BLOCK_SIZE page (refine-job.ts). */
export interface SubDigestJob extends JobBase {
  kind: "sub-digests";
}

/** Source side, after SUB_DIGESTS: the pages that differ from `dst` (sub-digests), as PATCH or DATA ops. */
export interface PatchJob extends JobBase {
  kind: "patch";
  dst: Uint8Array;
  zstdLevel: number;
  withoutPayload: boolean;
}

/** PATCH of whole blocks: `data` pages get `payload`'s bytes (`dataBytes` of them raw), `zeros` pages become zeros. */
export interface PatchOp {
  kind: "patch";
  offset: number;
  length: number;
  data: Uint8Array;
  zeros: Uint8Array;
  payload: Uint8Array | undefined;
  zstd: boolean;
  dataBytes: number;
  zeroBytes: number;
}

export type JobOp =
  | { kind: "data"; offset: number; length: number; payload: Uint8Array | undefined; zstd: boolean }
  | { kind: "zero"; offset: number; length: number }
  | PatchOp
  /** Blocks that differ and that the destination holds with data: ask for their sub-digests. */
  | { kind: "refine"; offset: number; length: number };

export interface DigestResult {
  digests: Uint8Array;
  bytesRead: number;
}

export interface DiffResult extends DigestResult {
  ops: JobOp[];
  /** The buffer the job read into: raw DATA payloads are views of it. */
  buffer?: Uint8Array;
}

/** A diff job's result: what it read, and per target (in the job's order) its digests (of the spans) and ops. */
export interface FanDiffResult {
  bytesRead: number;
  targets: { digests: Uint8Array; ops: JobOp[] }[];
  /** Buffers the job read into (a span's each): raw DATA payloads of any target may be views of them. */
  buffers?: Uint8Array[];
}

export interface UnpackResult {
  /** The decompressed bytes; undefined for a raw payload (the caller's payload is the data). */
  data: Uint8Array | undefined;
  digests: Uint8Array;
  /** One byte per page of `data`: 1 when the page is all zero. */
  zeroPages: Uint8Array;
}

export type JobResult = DigestResult | DiffResult | FanDiffResult | UnpackResult;
