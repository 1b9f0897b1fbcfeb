/**
 * Seeds and randomness for the fuzz tests: a small seeded PRNG (mulberry32), so one seed
 * gives the same run on Deno and Node, and the loop that runs one seed per iteration.
 *
 * SSYNC_FUZZ_ITERATIONS sets how many iterations each fuzz test runs (the suite's default is
 * small); SSYNC_FUZZ_SEED the first seed (iteration i uses seed + i). A failure names its
 * seed and how to rerun just that one.
 */
import process from "node:process";

export class Random {
  readonly seed: number;
  #state: number;

  constructor(seed: number) {
    this.seed = seed >>> 0;
    this.#state = this.seed || 0x9e3779b9;
  }

  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }

  /** A u53 that is often at a boundary: 0, 1, 2^32 ± 1, 2^53 − 1, a multiple of 4096. */
  u53(): number {
    switch (this.int(6)) {
      case 0:
        return this.pick([0, 1, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, Number.MAX_SAFE_INTEGER]);
      case 1:
        return this.int(2 ** 20) * 4096;
      case 2:
        return this.int(2 ** 21) * 2 ** 32 + this.int(2 ** 32);
      default:
        return this.int(1 << 30);
    }
  }
}

function envNumber(name: string): number | undefined {
  const text = process.env[name];
  if (text === undefined || text === "") return undefined;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`Cannot use ${name}=${text}: not a non-negative integer`);
  return n;
}

/** Iterations for this run: SSYNC_FUZZ_ITERATIONS, else the suite's default. */
export function fuzzIterations(suiteDefault: number): number {
  return envNumber("SSYNC_FUZZ_ITERATIONS") ?? suiteDefault;
}

/**
 * Runs `body` once per seed (SSYNC_FUZZ_SEED, else `firstSeed`, then +1 each time); a failure
 * is rethrown naming its seed.
 */
export async function forEachSeed(
  options: { iterations: number; firstSeed: number; name: string },
  body: (rng: Random) => Promise<void> | void,
): Promise<void> {
  const first = envNumber("SSYNC_FUZZ_SEED") ?? options.firstSeed;
  for (let i = 0; i < options.iterations; i++) {
    const seed = first + i;
    currentSeed = `${options.name} seed ${seed}`;
    try {
      await body(new Random(seed));
    } catch (e) {
      const rerun = `SSYNC_FUZZ_SEED=${seed} SSYNC_FUZZ_ITERATIONS=1`;
      throw new Error(`${options.name} failed with seed ${seed} (rerun: ${rerun}): ${(e as Error)?.message ?? e}`, { cause: e });
    } finally {
      currentSeed = undefined;
    }
  }
}

let currentSeed: string | undefined;

/**
 * Watches for unhandled rejections while `body` runs (process 'unhandledRejection', and the
 * web event on Deno); returns what it saw. Each is also logged at once with the seed running,
 * since a test runner may fail the test before `body` returns.
 */
export async function watchUnhandledRejections(body: () => Promise<void>): Promise<unknown[]> {
  const seen: unknown[] = [];
  const note = (reason: unknown) => {
    seen.push(reason);
    console.error(`unhandled rejection during ${currentSeed ?? "a fuzz test"}:`, reason);
  };
  const onProcess = (reason: unknown) => note(reason);
  const onWeb = (event: Event) => {
    note((event as PromiseRejectionEvent).reason);
    event.preventDefault();
  };
  process.on("unhandledRejection", onProcess);
  globalThis.addEventListener?.("unhandledrejection", onWeb);
  try {
    await body();
  } finally {
    process.off("unhandledRejection", onProcess);
    globalThis.removeEventListener?.("unhandledrejection", onWeb);
  }
  return seen;
}
