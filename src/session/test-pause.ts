/**
 * Test only: `SSYNC_TEST_PAUSE_FILE=<path>` holds a sync's source side (the client for push
 * and `ssync sync`, the listener for pull) after its first range, so that a test can change
 * the source at a known point (test/source-changed.test.ts). Without the variable nothing
 * here waits or touches the disk.
 *
 * With it, the first range to start is read alone: every other range waits in `beforeRange`
 * until the pause is over. Once the first range is read and its ops emitted (`afterRange`),
 * the source side creates <path>, holding that range as "OFFSET LENGTH\n" (written whole:
 * renamed into place), and polls every PAUSE_POLL_MS until the test removes it,
 * at most PAUSE_MAX_MS (then it fails the session, saying so). A session that aborts stops
 * waiting at once; a first range that fails lets the others go on (`release`).
 */
import fs from "node:fs";
import process from "node:process";

const PAUSE_POLL_MS = 20;
const PAUSE_MAX_MS = 60_000;

export class TestPause {
  readonly #file: string;
  #firstStarted = false;
  #firstDone = false;
  readonly #over: Promise<void>;
  readonly #end: () => void;

  private constructor(file: string) {
    this.#file = file;
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#over = promise;
    this.#end = resolve;
  }

  /** A pause for one session when SSYNC_TEST_PAUSE_FILE is set, else undefined. */
  static fromEnv(): TestPause | undefined {
    let file: string | undefined;
    try {
      file = process.env.SSYNC_TEST_PAUSE_FILE;
    } catch {
      return undefined; // Deno without --allow-env
    }
    return file ? new TestPause(file) : undefined;
  }

  /** Before a range reads the source: the first range goes on, the others wait for the pause to end. */
  async beforeRange(signal: AbortSignal): Promise<void> {
    if (!this.#firstStarted) {
      this.#firstStarted = true;
      return;
    }
    await abortable(this.#over, signal);
  }

  /** After `range` was read and its ops emitted: the first time, the pause. */
  async afterRange(range: { offset: number; length: number }, signal: AbortSignal): Promise<void> {
    if (this.#firstDone) return;
    this.#firstDone = true;
    try {
      fs.writeFileSync(`${this.#file}.tmp`, `${range.offset} ${range.length}\n`);
      fs.renameSync(`${this.#file}.tmp`, this.#file);
      const end = Date.now() + PAUSE_MAX_MS;
      while (fs.existsSync(this.#file)) {
        if (Date.now() > end) throw new Error(`Cannot pause for the test: ${this.#file} still exists after ${PAUSE_MAX_MS} ms`);
        await abortable(new Promise((r) => setTimeout(r, PAUSE_POLL_MS)), signal);
      }
    } finally {
      this.#end();
    }
  }

  /** After any range, however it ended: a first range that failed before its pause lets the others go on. */
  release(): void {
    this.#end();
  }
}

function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  signal.throwIfAborted();
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
