/**
 * Pipelining bounds shared by client and server, and the bounds a server session keeps
 * against a hostile authenticated peer (spec §6). A server session holds at most
 * SESSION_MEMORY_BYTES.
 */
import { MAX_RECORD } from "../../protocol/constants.ts";
import { DEFAULT_MAX_UNREAD_BYTES, DEFAULT_MAX_UNSENT_BYTES } from "../net/noise-record-channel.ts";

/**
 * Ranges a client keeps in flight (SIGS or READ_DIFF not yet done): with data ranges of
 * DATA_RANGE_BYTES (4 MiB) and LOOKAHEAD_JOBS each, 16 jobs of 1 MiB at most.
 */
export const RANGES_IN_FLIGHT = 8;
/**
 * Ranges in flight when both sides run in this process (`ssync sync`: RecordChannel.inProcess):
 * no link latency to cover, and each range's job results (the first copy's read buffers) sit
 * in the same process as the destination's. A VM-like first copy (scripts/bench, medians of 3)
 * with 8: 4.49 s, 192 MiB peak; with 4: 4.00 s, 180 MiB.
 */
export const LOCAL_RANGES_IN_FLIGHT = 4;
/**
 * Requests a push server works on at once; beyond that it stops reading (TCP back-pressure).
 * With the one request the receive loop holds, at most SERVER_TASKS + 1 are in flight.
 */
export const SERVER_TASKS = 64;
/**
 * READ_DIFFs a pull server reads and sends at once; up to SERVER_TASKS requests wait as tasks
 * (so the session goes on reading, e.g. the SUB_DIGESTS a refining READ_DIFF waits for), and
 * beyond that it stops reading. Each READ_DIFF keeps LOOKAHEAD_JOBS jobs going, enough to keep
 * every worker busy.
 */
export const PULL_TASKS = 8;
/**
 * Bytes of DATA in flight that are not yet acknowledged (push) or written (pull): far above
 * a LAN's bandwidth-delay product, and a bound on the client's memory (peak RSS ≤ 200 MiB).
 */
export const DATA_WINDOW_BYTES = 16 << 20;
/**
 * Jobs one range may run ahead of the one being consumed. The disk's depth comes from
 * read-ahead (engine/read-ahead.ts), not from jobs: RANGES_IN_FLIGHT × LOOKAHEAD_JOBS jobs
 * keep every worker busy, and each may hold a MiB of results.
 */
export const LOOKAHEAD_JOBS = 2;
/**
 * Ranges a push destination keeps claimed and not closed (SIGS received, RANGE_DONE not yet);
 * one more SIGS is a violation. A client keeps at most RANGES_IN_FLIGHT (older ones 32); each pins up to
 * MAX_RANGE_BLOCKS digests (256 KiB).
 */
export const MAX_OPEN_RANGES = 64;
/**
 * Disjoint intervals of blocks a session tracks (ranges claimed, ranges closed). Honest
 * ranges tile the file nearly in order, so their intervals stay below the ranges in flight;
 * a range that would make more is a violation. Keeps the bookkeeping linear.
 */
export const MAX_TRACKED_INTERVALS = 1024;
/**
 * Bytes of large buffers a server session holds at once, counted before they are made
 * (SessionMemory): DATA received and not yet written (the record and its decompressed
 * bytes), job results waiting to be sent (and the records they become), the digests of its
 * ranges and their replies (SIGS, SIGS_REPLY, READ_DIFF). A request that does not fit waits,
 * and the session stops reading meanwhile.
 */
export const SESSION_BUFFER_BYTES = 32 << 20;
/**
 * Pull with refinement: records of requests a server session reads ahead of those it works
 * on, so the SUB_DIGESTS its streams wait for are never stuck behind them (request-reader.ts).
 */
export const REQUEST_READ_AHEAD_BYTES = 4 << 20;
/**
 * All a server session holds: its buffers, plus what the record channel queues (records
 * received and not yet read; bytes the socket has not sent yet), each up to its threshold
 * plus one record.
 */
export const SESSION_MEMORY_BYTES = SESSION_BUFFER_BYTES + DEFAULT_MAX_UNREAD_BYTES + DEFAULT_MAX_UNSENT_BYTES + 2 * MAX_RECORD + REQUEST_READ_AHEAD_BYTES;

// Batches (spec "Batches (protocol 2)", §6)

/**
 * A batch slot's own window (the v1 session's SESSION_BUFFER_BYTES): every hold of its session,
 * including the ones that wait for its own records (a push range's digests until RANGE_DONE).
 * An honest slot needs at most RANGES_IN_FLIGHT ranges' digests and replies (≤ 8 × 600 KiB) and
 * one DATA (2 MiB) at once, so it never waits on itself.
 */
export const SLOT_BUFFER_BYTES = 8 << 20;
/**
 * The window a batch's slots share for their transient holds (DATA not yet written, results not
 * yet sent: released by local work or by the client reading): one session's worth.
 */
export const BATCH_BUFFER_BYTES = SESSION_BUFFER_BYTES;
/**
 * Bytes of records one slot's queue holds (each counted at least RECORD_CHARGE) before the
 * connection's reader waits for that slot. An honest pull slot never queues this much (at most
 * RANGES_IN_FLIGHT READ_DIFFs of ≤ 344 KiB and their SUB_DIGESTS), so its answers stay readable.
 */
export const SLOT_QUEUE_BYTES = 4 << 20;
/** Control requests (LIST, MKDIR, REMOVE, RMDIR) a batch works on at once; beyond them it stops reading slot 0. */
export const CONTROL_TASKS = 16;
/** File slots a batch client asks for by default: enough for small files to overlap their round trips. */
export const DEFAULT_BATCH_SLOTS = 4;
