/**
 * The listener's connections still in the handshake, with caps in all and per address
 * prefix (address-prefixes.ts). A new connection is always admitted: when it would pass a
 * cap, the oldest pending handshake of that prefix (for a prefix's cap) or of all (for the
 * cap in all) is evicted. So idle or slow sockets can never keep a fresh client out; they
 * only ever shorten each other's time, and an honest handshake needs milliseconds.
 *
 * Invariant: after admit(), no prefix holds more than its cap and the whole no more than
 * `total`; evict callbacks run synchronously, after the slot has left every count.
 */
export interface HandshakeSlot {
  /** Leaves the counts (idempotent; a no-op once evicted). */
  release(): void;
}

interface Entry {
  prefixes: readonly string[];
  evict: (reason: string) => void;
  live: boolean;
}

export class HandshakeSlots {
  #total: number;
  #capOf: (prefix: string) => number;
  /** Insertion order is age order. */
  #all = new Set<Entry>();
  #byPrefix = new Map<string, Set<Entry>>();

  constructor(options: { total: number; capOf: (prefix: string) => number }) {
    this.#total = options.total;
    this.#capOf = options.capOf;
  }

  get size(): number {
    return this.#all.size;
  }

  /** Admits a handshake from an address with these prefixes, evicting older ones as needed. */
  admit(prefixes: readonly string[], evict: (reason: string) => void): HandshakeSlot {
    for (const prefix of prefixes) {
      const cap = Math.max(1, this.#capOf(prefix));
      const set = this.#byPrefix.get(prefix);
      while (set !== undefined && set.size >= cap) {
        this.#evict(first(set), `evicted: a newer connection from ${prefix} reached the cap of ${cap} handshakes in progress there`);
      }
    }
    while (this.#all.size >= Math.max(1, this.#total)) {
      this.#evict(first(this.#all), `evicted: a newer connection reached the cap of ${this.#total} handshakes in progress`);
    }
    const entry: Entry = { prefixes, evict, live: true };
    this.#all.add(entry);
    for (const prefix of prefixes) {
      let set = this.#byPrefix.get(prefix);
      if (set === undefined) this.#byPrefix.set(prefix, set = new Set());
      set.add(entry);
    }
    return { release: () => this.#remove(entry) };
  }

  /** Evicts every pending handshake (the listener is stopping). */
  evictAll(reason: string): void {
    for (const entry of [...this.#all]) this.#evict(entry, reason);
  }

  #evict(entry: Entry, reason: string): void {
    this.#remove(entry);
    entry.evict(reason);
  }

  #remove(entry: Entry): void {
    if (!entry.live) return;
    entry.live = false;
    this.#all.delete(entry);
    for (const prefix of entry.prefixes) {
      const set = this.#byPrefix.get(prefix)!;
      set.delete(entry);
      if (set.size === 0) this.#byPrefix.delete(prefix);
    }
  }
}

function first<T>(set: Set<T>): T {
  return set.values().next().value as T;
}
