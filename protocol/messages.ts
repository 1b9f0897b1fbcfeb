/**
 * Protocol messages as a discriminated union on `type`. One message per record.
 * Every message carries the request `cookie` it belongs to: requests choose it,
 * replies echo it. Byte layouts: protocol/spec.md.
 */
import type { ErrorName, HashAlgorithm, Mode } from "./constants.ts";

export type StoreKind = "file" | "block-device";

/** Client → server: opens the named path or export; the first message of a session. */
export interface OpenMessage {
  type: "OPEN";
  cookie: number;
  version: number;
  mode: Mode;
  hash: HashAlgorithm;
  blockSize: number;
  dryRun: boolean;
  /** OPEN_CLIENT_ZSTD: the client decompresses zstd DATA; without it a pull source sends raw DATA. */
  clientZstd: boolean;
  /** OPEN_IN_PLACE: write the destination in place (absent means false). */
  inPlace?: boolean;
  /** OPEN_REFINE: the client speaks REFINE, SUB_DIGESTS and PATCH (absent means false). */
  refine?: boolean;
  /** OPEN_COMPRESS_ALWAYS: pull, with clientZstd: try zstd on every DATA (absent means false). */
  compressAlways?: boolean;
  /** OPEN_ALLOW_SHRINK: push: the destination may lose data past the source's size (absent means false). */
  allowShrink?: boolean;
  /** OPEN_CACHE_KEY: push: the client takes the destination's cached hash key if offered (absent means false). */
  cacheKey?: boolean;
  /** Push: the source size (the final size). Pull: the client's current destination size. */
  size: number;
  /** Fresh random key for the keyed block digests of this session. */
  key: Uint8Array;
  name: string;
  /**
   * OPEN_METADATA (absent: not set). Push: the source's attributes the destination is asked
   * to take (the METADATA trailer). Pull: always `{}` (no trailer): the client asks for the
   * source's attributes in OPEN_OK.
   */
  metadata?: FileAttributes;
}

/**
 * A METADATA trailer: each attribute present is one its `attrs` bits name (META_MODE,
 * META_MTIME, META_OWNER); an absent one is all zeros on the wire.
 */
export interface FileAttributes {
  /** Permission bits, setuid, setgid, sticky: ≤ 0o7777. */
  mode?: number;
  /** Modification time in ns since the epoch (negative before 1970). */
  mtimeNs?: bigint;
  /** Numeric owner and group. */
  owner?: { uid: number; gid: number };
}

/** Server → client: the file is open (and, when writing, locked). */
export interface OpenOkMessage {
  type: "OPEN_OK";
  cookie: number;
  /** Push: the destination's current size. Pull: the source size (the final size). */
  size: number;
  zstd: boolean;
  kind: StoreKind;
  /** CAP_REFINE: both sides refine differing blocks to pages (absent means false). */
  refine?: boolean;
  /**
   * CAP_METADATA (absent: not set; set exactly when OPEN had OPEN_METADATA). Push: the
   * destination's current values of the attributes it will apply (a subset of those OPEN
   * asked for; none for a block device). Pull: the source's attributes (none for a block device).
   */
  metadata?: FileAttributes;
  /**
   * CAP_CACHE_KEY (push, only to OPEN_CACHE_KEY): the hash key of the destination's signature
   * cache (§5.10); both sides hash under it for this session instead of OPEN's key.
   */
  cacheKey?: Uint8Array;
}

/** Push, client (source) → server (destination): send the digests of a range. */
export interface SigsMessage {
  type: "SIGS";
  cookie: number;
  offset: number;
  length: number;
}

/** Reply to SIGS: one digest per block of the range, zero digest for all-zero blocks. */
export interface SigsReplyMessage {
  type: "SIGS_REPLY";
  cookie: number;
  offset: number;
  length: number;
  digests: Uint8Array;
}

/** Bytes for [offset, offset+length): a push write, or a pull reply chunk. */
export interface DataMessage {
  type: "DATA";
  cookie: number;
  offset: number;
  length: number;
  /** Raw bytes (length of them), one zstd frame of them, or none in a dry run. */
  payload: Uint8Array | undefined;
  zstd: boolean;
}

/** [offset, offset+length) becomes zeros (a hole where possible). */
export interface ZeroMessage {
  type: "ZERO";
  cookie: number;
  offset: number;
  length: number;
}

/** No more DATA or ZERO will come for this range (push: request; pull: last reply of READ_DIFF). */
export interface RangeDoneMessage {
  type: "RANGE_DONE";
  cookie: number;
  offset: number;
  length: number;
}

/** Pull, client (destination) → server (source): here are my digests; send what differs. */
export interface ReadDiffMessage {
  type: "READ_DIFF";
  cookie: number;
  offset: number;
  length: number;
  digests: Uint8Array;
}

/** Client → server: make the destination durable (fsync), reply ACK. */
export interface FlushMessage {
  type: "FLUSH";
  cookie: number;
}

/** Client → server: compare root hashes; the server answers COMMIT_OK or ERROR EBADMSG. */
export interface CommitMessage {
  type: "COMMIT";
  cookie: number;
  root: Uint8Array;
}

export interface CommitOkMessage {
  type: "COMMIT_OK";
  cookie: number;
  root: Uint8Array;
  /** What the server's side did, for the client's summary. */
  counters: ServerCounters;
}

export interface ServerCounters {
  bytesRead: number;
  holeBytesSkipped: number;
  bytesWritten: number;
  bytesPunched: number;
}

/** Success reply to DATA, ZERO, RANGE_DONE and FLUSH. */
export interface AckMessage {
  type: "ACK";
  cookie: number;
}

/** A request failed; the session goes on unless the error says otherwise. */
export interface ErrorMessage {
  type: "ERROR";
  cookie: number;
  code: ErrorName;
  message: string;
}

/**
 * The source asks for the sub-digests (one per SUB_BLOCK_SIZE page) of a run of whole blocks
 * of an open range. Push: a request (C→S). Pull: sent inside a READ_DIFF stream, with its cookie.
 */
export interface RefineMessage {
  type: "REFINE";
  cookie: number;
  offset: number;
  length: number;
}

/** The destination's answer to REFINE (same cookie, offset, length): one sub-digest per page. */
export interface SubDigestsMessage {
  type: "SUB_DIGESTS";
  cookie: number;
  offset: number;
  length: number;
  digests: Uint8Array;
}

/**
 * A run of whole blocks rewritten page by page: the pages of `data` get the bytes carried
 * (in ascending order), the pages of `zeros` become zeros, every other page keeps what the
 * destination holds. Masks: ⌈pages/8⌉ bytes, bit i = byte i>>3, bit i&7 (LSB first).
 */
export interface PatchMessage {
  type: "PATCH";
  cookie: number;
  offset: number;
  length: number;
  data: Uint8Array;
  zeros: Uint8Array;
  /** The `data` pages' bytes, one zstd frame of them, or none in a dry run. */
  payload: Uint8Array | undefined;
  zstd: boolean;
}

export type Message =
  | OpenMessage
  | OpenOkMessage
  | SigsMessage
  | SigsReplyMessage
  | DataMessage
  | ZeroMessage
  | RangeDoneMessage
  | ReadDiffMessage
  | FlushMessage
  | CommitMessage
  | CommitOkMessage
  | AckMessage
  | ErrorMessage
  | RefineMessage
  | SubDigestsMessage
  | PatchMessage;
