/** Pipelining bounds shared by client and server. Memory per session stays below ~100 MiB. */

/** Ranges a client keeps in flight (SIGS or READ_DIFF not yet done). */
export const RANGES_IN_FLIGHT = 32;
/** Requests a server works on at once; beyond that it stops reading (TCP back-pressure). */
export const SERVER_TASKS = 64;
/** Bytes of DATA in flight that are not yet acknowledged (push) or written (pull). */
export const DATA_WINDOW_BYTES = 32 << 20;
/** Jobs one range may run ahead of the one being consumed. */
export const LOOKAHEAD_JOBS = 4;
/** zstd level for DATA: 1 is fast and already saves much on typical images. */
export const ZSTD_LEVEL = 1;
/**
 * Ranges a push destination keeps open (SIGS answered, RANGE_DONE not yet received). A client
 * keeps at most RANGES_IN_FLIGHT; more is a violation (each pins up to 256 KiB of digests).
 */
export const MAX_OPEN_RANGES = 2 * RANGES_IN_FLIGHT;
