/**
 * Wire constants of ssync protocol version 1. Normative text: protocol/spec.md.
 * Every number here appears in the spec under the same name.
 */

/** The protocol version: byte 6 of the preamble and the OPEN version field. */
export const PROTOCOL_VERSION = 1;

// §1 Connection and handshake

/** The first bytes of every connection: "SSYNC" 0x00. */
export const PREAMBLE_MAGIC: readonly number[] = Object.freeze([0x53, 0x53, 0x59, 0x4e, 0x43, 0x00]);
/** Bytes of the clear preamble: PREAMBLE_MAGIC, u8 PROTOCOL_VERSION, u8 mode. */
export const PREAMBLE_SIZE = 8;
/** Preamble modes: which Noise protocol follows. */
export const MODE_XX = 0;
export const MODE_PAIRING = 1;
/** The Noise protocol of MODE_XX. */
export const PROTOCOL_NAME = "Noise_XX_25519_ChaChaPoly_SHA256";
/** The Noise protocol of MODE_PAIRING. */
export const PAIRING_PROTOCOL_NAME = "Noise_XXpsk3_25519_ChaChaPoly_SHA256";
/** The pairing psk is SHA-256(PAIRING_PSK_LABEL ‖ normalised pairing code). */
export const PAIRING_PSK_LABEL = "ssync-pair-v1";
/** Bytes of the big-endian length (a u16) before each handshake message. */
export const HANDSHAKE_LENGTH_SIZE = 2;
/** Exact sizes of handshake messages 1, 2, 3 of PROTOCOL_NAME (empty payloads). */
export const XX_MESSAGE_SIZES: readonly number[] = Object.freeze([32, 96, 64]);
/** Exact sizes of handshake messages 1, 2, 3 of PAIRING_PROTOCOL_NAME (empty payloads). */
export const XXPSK3_MESSAGE_SIZES: readonly number[] = Object.freeze([48, 96, 64]);
/** The whole handshake, acceptance included, must finish within this time. */
export const HANDSHAKE_TIMEOUT_MS = 10_000;

// §2 Records

/** Bytes of the big-endian word before each record's ciphertext (a u32). */
export const RECORD_WORD_SIZE = 4;
/** Bit 31 of the record word: the END frame, the orderly end of a direction. */
export const END_FLAG = 0x8000_0000;
/** Bits 0–30 of the record word: the ciphertext length. */
export const LENGTH_MASK = 0x7fff_ffff;
/** Bytes of the ChaCha20-Poly1305 tag that ends every record ciphertext. */
export const TAG_SIZE = 16;
/** Records per direction between two rekeys. */
export const REKEY_INTERVAL = 2 ** 20;

// §3 Messages

/** Bytes of the fixed header that starts every record after the handshake. */
export const HEADER_SIZE = 32;
/** Largest payload a record may carry; checked before anything is allocated. */
export const MAX_PAYLOAD = 1 << 20;
/** Largest record plaintext: header plus payload (a frame's ciphertext adds TAG_SIZE). */
export const MAX_RECORD = HEADER_SIZE + MAX_PAYLOAD;
/** Largest decompressed DATA length; also the largest block size. */
export const MAX_DATA_LENGTH = 1 << 20;
/** Block sizes are powers of two in [MIN_BLOCK_SIZE, MAX_BLOCK_SIZE]. */
export const MIN_BLOCK_SIZE = 4096;
export const MAX_BLOCK_SIZE = MAX_DATA_LENGTH;
export const DEFAULT_BLOCK_SIZE = 64 * 1024;
/** Most blocks one SIGS, READ_DIFF or RANGE_DONE may cover. */
export const MAX_RANGE_BLOCKS = 16384;
/** Bytes of one block digest. A digest of DIGEST_SIZE zero bytes means "all-zero block". */
export const DIGEST_SIZE = 16;

export const HASH_KEY_SIZE = 32;
/** Longest OPEN name, in UTF-8 bytes. */
export const MAX_NAME_LENGTH = 4096;
/** Longest ERROR message, in UTF-8 bytes. */
export const MAX_ERROR_MESSAGE = 1024;
/** Largest offset or length: JavaScript's exact integer range. */
export const MAX_U53 = Number.MAX_SAFE_INTEGER;

/** Message type codes (header byte 0..1). */
export const MessageCode = {
  OPEN: 1,
  OPEN_OK: 2,
  SIGS: 3,
  SIGS_REPLY: 4,
  DATA: 5,
  ZERO: 6,
  RANGE_DONE: 7,
  READ_DIFF: 8,
  FLUSH: 9,
  COMMIT: 10,
  COMMIT_OK: 11,
  ACK: 12,
  ERROR: 13,
  REFINE: 14,
  SUB_DIGESTS: 15,
  PATCH: 16,
} as const;
export type MessageType = keyof typeof MessageCode;

/** DATA flag: the payload is one zstd frame that decompresses to exactly `length` bytes. */
export const FLAG_ZSTD = 0x0001;
/** DATA flag, dry runs only: the bytes are left out (payload empty); nothing may be written. */
export const FLAG_NO_PAYLOAD = 0x0002;
/** COMMIT_OK payload: root, then the server's counters (4 × u64). */
export const COMMIT_OK_SIZE = DIGEST_SIZE + 4 * 8;

/** OPEN modes: who is the source. */
export const ModeCode = { push: 1, pull: 2 } as const;
export type Mode = keyof typeof ModeCode;

/** Block digest algorithms; all give DIGEST_SIZE bytes. */
export const HashCode = { "hmac-sha256": 1, blake3: 2, xxh128: 3, poly1305: 4 } as const;
export type HashAlgorithm = keyof typeof HashCode;

/** OPEN flags. */
export const OPEN_DRY_RUN = 0x0001;
/** OPEN flag, the client's capability: it decompresses zstd DATA (a pull source may send it). */
export const OPEN_CLIENT_ZSTD = 0x0002;
/** OPEN flag, push: write in place (no journal, no partial file: faster, torn if interrupted). */
export const OPEN_IN_PLACE = 0x0004;
/** OPEN flag, the client's capability: it speaks REFINE, SUB_DIGESTS and PATCH (§5.8). */
export const OPEN_REFINE = 0x0008;
/**
 * OPEN flag, pull, with OPEN_CLIENT_ZSTD: the client asks the source to try zstd on every DATA
 * (--compress=always), not only while its link is the bottleneck. Ignored otherwise.
 */
export const OPEN_COMPRESS_ALWAYS = 0x0010;
/**
 * OPEN flag, push: the destination may become smaller than it is even where the part cut off
 * holds data (--allow-shrink); without it such an OPEN is refused with ERROR EPERM. Ignored on pull.
 */
export const OPEN_ALLOW_SHRINK = 0x0020;
/**
 * OPEN flag: file metadata (§3 METADATA). Push: OPEN's payload ends with a METADATA trailer,
 * the source's attributes the destination is asked to take; pull: no trailer, the client asks
 * for the source's attributes in OPEN_OK.
 */
export const OPEN_METADATA = 0x0040;
/**
 * OPEN flag, push (ignored on pull and in a dry run): the client takes the hash key of the
 * destination's signature cache (§5.10) for this session, if the server answers CAP_CACHE_KEY.
 */
export const OPEN_CACHE_KEY = 0x0080;
export const OPEN_FLAGS_KNOWN = OPEN_DRY_RUN | OPEN_CLIENT_ZSTD | OPEN_IN_PLACE | OPEN_REFINE | OPEN_COMPRESS_ALWAYS |
  OPEN_ALLOW_SHRINK | OPEN_METADATA | OPEN_CACHE_KEY;

/** OPEN_OK capability bits. */
export const CAP_ZSTD = 0x0001;
/** OPEN_OK capability: the server speaks REFINE, SUB_DIGESTS and PATCH; set only when OPEN had OPEN_REFINE. */
export const CAP_REFINE = 0x0002;
/**
 * OPEN_OK capability: OPEN_OK's payload ends with a METADATA trailer (push: the destination's
 * current values of the attributes it will apply; pull: the source's); set only, and always,
 * when OPEN had OPEN_METADATA.
 */
export const CAP_METADATA = 0x0004;
/**
 * OPEN_OK capability, push, only to an OPEN with OPEN_CACHE_KEY: the destination answers SIGS
 * from its signature cache (§5.10); OPEN_OK's payload ends with the cache's hash key
 * (HASH_KEY_SIZE bytes, after any METADATA trailer), which both sides use instead of OPEN's.
 */
export const CAP_CACHE_KEY = 0x0008;
export const CAPS_KNOWN = CAP_ZSTD | CAP_REFINE | CAP_METADATA | CAP_CACHE_KEY;

// §3 METADATA trailer

/** Bytes of a METADATA trailer: u32 attrs, u32 mode, i64 mtime seconds, u32 mtime ns, u32 uid, u32 gid. */
export const METADATA_SIZE = 28;
/** METADATA attrs bits: which attributes the trailer carries (the others' fields are 0). */
export const META_MODE = 0x1;
export const META_MTIME = 0x2;
/** Owner and group, together. */
export const META_OWNER = 0x4;
export const META_KNOWN = META_MODE | META_MTIME | META_OWNER;
/** The largest METADATA mode: permission bits, setuid, setgid and sticky (a destination takes only 0o777 of them). */
export const MAX_META_MODE = 0o7777;

// §4, §5.8 Refinement

/** Bytes of one sub-block (a page): the unit REFINE, SUB_DIGESTS and PATCH work in. */
export const SUB_BLOCK_SIZE = 4096;
/** Longest REFINE, SUB_DIGESTS or PATCH range: a run of whole blocks, at most this many bytes. */
export const MAX_REFINE_LENGTH = 1 << 20;
/** Most sub-digests one SUB_DIGESTS carries (and pages one PATCH masks cover). */
export const MAX_REFINE_PAGES = MAX_REFINE_LENGTH / SUB_BLOCK_SIZE;

/** OPEN_OK kinds of the server's file. */
export const KindCode = { file: 1, "block-device": 2 } as const;

/** Digest-run kinds inside SIGS_REPLY and READ_DIFF payloads. */
export const RUN_ZERO = 0;
export const RUN_DIGESTS = 1;

/** ERROR codes: Linux errno values where one fits. */
export const ErrorCode = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  EISDIR: 21,
  EINVAL: 22,
  EFBIG: 27,
  ENOSPC: 28,
  EROFS: 30,
  EPROTO: 71,
  EBADMSG: 74,
  ENOTSUP: 95,
  /** A pull source changed while it was read (§5): the client must not report the pull identical. */
  ESTALE: 116,
} as const;
export type ErrorName = keyof typeof ErrorCode;

// Batches (protocol 2): many files over one connection (spec "Batches")

/** The version a BATCH record carries: the protocol that adds batches. */
export const BATCH_VERSION = 2;
/** Bytes of the u16 slot before every message of a batch connection after BATCH_OK. */
export const SLOT_PREFIX_SIZE = 2;
/** Largest record plaintext on a batch connection: a slot and a message (the frame limit grows by the prefix). */
export const MAX_SLOT_RECORD = MAX_RECORD + SLOT_PREFIX_SIZE;
/** Slot 0 of a batch: its control stream (LIST, MKDIR, REMOVE, RMDIR and their replies). */
export const CONTROL_SLOT = 0;
/** Most file slots a server grants (slots 1 … granted carry v1 sessions). */
export const MAX_SLOTS = 8;
/** Most entries one LIST walks; beyond it the LIST is answered ERROR EFBIG. */
export const MAX_LIST_ENTRIES = 1_000_000;
/** Bytes of a LIST_ENTRIES entry before its name: u8 kind, u64 size, i64 mtime s, u32 mtime ns, u16 name length. */
export const LIST_ENTRY_FIXED = 1 + 8 + 8 + 4 + 2;

/** Message codes of batch connections (after PATCH's 16); v1 sessions never carry them. */
export const BatchMessageCode = {
  BATCH: 17,
  BATCH_OK: 18,
  LIST: 19,
  LIST_ENTRIES: 20,
  MKDIR: 21,
  REMOVE: 22,
  RMDIR: 23,
} as const;
export type BatchMessageType = keyof typeof BatchMessageCode;

/** LIST_ENTRIES flag: the LIST's last reply (it may carry entries too). */
export const FLAG_LAST = 0x0001;

/** LIST_ENTRIES entry kinds. */
/** LIST entry kinds; `unlisted` (6): a folder the listener could not walk (nothing below it is listed). */
export const EntryKindCode = { file: 1, folder: 2, symlink: 3, "block-device": 4, other: 5, unlisted: 6 } as const;
export type EntryKind = keyof typeof EntryKindCode;
