/**
 * The listener's defaults for what it holds for others (spec §6 and "Threat model"); each
 * can be changed through ListenerOptions.
 */

/** Connections in the handshake, in all; beyond it the oldest is evicted. */
export const DEFAULT_MAX_HANDSHAKES = 64;
/** Connections in the handshake from one IPv4 address or IPv6 /64; beyond it that prefix's oldest is evicted. */
export const DEFAULT_MAX_HANDSHAKES_PER_ADDRESS = 4;
/** Connections in the handshake from one IPv6 /48 (one site); beyond it its oldest is evicted. */
export const DEFAULT_MAX_HANDSHAKES_PER_NETWORK = 16;
/** The preamble and handshake message 1 must arrive within this (the whole handshake: HANDSHAKE_TIMEOUT_MS). */
export const FIRST_MESSAGE_TIMEOUT_MS = 2500;
/**
 * New connections per address prefix: a bucket of HANDSHAKE_BURST tokens refilled at
 * HANDSHAKE_REFILL_PER_SECOND; a connection finding it empty is closed before any crypto
 * (a responder's handshake costs three X25519 operations, ~3 ms of the main thread). A
 * connection whose key is authorized and served gets its token back, so honest clients
 * are never slowed by it; 16 addresses without a key get 32 handshakes per second, ~10 % of
 * a core.
 */
export const HANDSHAKE_BURST = 8;
export const HANDSHAKE_REFILL_PER_SECOND = 2;
/** Sessions (authenticated connections) in all, and per client key. */
export const DEFAULT_MAX_SESSIONS = 64;
export const DEFAULT_MAX_SESSIONS_PER_KEY = 8;
/** A session whose peer sends nothing (or only a dry run's FLUSH) or reads nothing this long is closed. */
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000;
/**
 * The listener-wide budget of bytes its sessions may hold at once (records waiting to be
 * sent, data read ahead, results waiting for a slot): one ByteWindow shared by every
 * session. 512 MiB lets a dozen sessions run at their full per-session depth (§6) while
 * staying well inside the smallest machine a listener is left running on (1–2 GiB of RAM);
 * beyond it, sessions wait for each other, slower but never failing.
 */
export const DEFAULT_MEMORY_BUDGET_BYTES = 512 << 20;
/** On SIGTERM or SIGINT, running sessions may finish within this; then they are cut. */
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000;
/**
 * An OPEN that finds its file locked by another writer waits this long for it (the session
 * of a client that just died lets go once the listener sees the connection close), retrying
 * every 50 ms, then answers EBUSY; the client may retry for longer (--wait).
 */
export const LOCK_WAIT_MS = 2000;
/** Refusal lines per second in the log before they are only counted (refusal-log.ts). */
export const REFUSAL_LINES_PER_SECOND = 5;
