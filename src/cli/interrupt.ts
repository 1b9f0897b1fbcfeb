/**
 * Ctrl-C (SIGINT) and SIGTERM for the client commands: sync, push and pull. (`ssync listen`
 * has its own: listen-command.ts.)
 *
 * 1. The first signal aborts `signal` with an InterruptedError: the command's session fails
 *    through its one abort path (client-session.ts) and its stores are disposed in order;
 *    main prints the one line (INTERRUPTED_ADVICE) and calls finished(): the process exits 4
 *    at once, whatever else still runs (a lock wait, a verify's reads: nothing that holds a
 *    destination's state).
 * 2. A command still unwinding `graceMs` after the signal, or a second signal meanwhile,
 *    exits 4 at once with the same line: a journal left on disk is recovered by the next
 *    open of the destination.
 *
 * Invariant: the last output is written once, by say(), whoever gets there first: the one
 * line on stderr, and under --json the error object on stdout (main's `report`).
 */
import process from "node:process";
import { setTimeout } from "node:timers";
import { InterruptedError } from "../util/errors.ts";
import { describeError, EXIT_INCOMPLETE } from "./exit-code.ts";

/** From the first signal to the forced exit. */
export const INTERRUPT_GRACE_MS = 3000;

export class Interrupt {
  readonly #controller = new AbortController();
  readonly #graceMs: number;
  readonly #report: (error: unknown) => void;
  #said = false;
  #onInt = () => this.#interrupt("SIGINT");
  #onTerm = () => this.#interrupt("SIGTERM");

  /** `report` writes a command's last output for the error it ended with (default: one line on stderr). */
  constructor(options: { graceMs?: number; report?: (error: unknown) => void } = {}) {
    this.#graceMs = options.graceMs ?? INTERRUPT_GRACE_MS;
    this.#report = options.report ?? ((error) => console.error(`ssync: ${describeError(error)}`));
    process.on("SIGINT", this.#onInt);
    process.on("SIGTERM", this.#onTerm);
  }

  /** Aborted with an InterruptedError by the first signal. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** What the command ended with: the interruption once there was one, else `e`. */
  outcome(e: unknown): unknown {
    return this.signal.aborted ? this.signal.reason : e;
  }

  /** Reports the error the command ended with, unless its last output was written already. */
  say(error: unknown): void {
    if (this.#said) return;
    this.#said = true;
    this.#report(error);
  }

  /**
   * The command has unwound with exit code `code`. Not interrupted: the handlers go (a later
   * signal acts as usual). Interrupted: the process exits now, with `code`.
   */
  finished(code: number): void {
    if (!this.signal.aborted) {
      process.off("SIGINT", this.#onInt);
      process.off("SIGTERM", this.#onTerm);
      return;
    }
    // After the current task, so that main's caller sees its result first.
    setTimeout(() => process.exit(code), 0);
  }

  #interrupt(name: string): void {
    if (this.signal.aborted) return this.#exitNow();
    this.#controller.abort(new InterruptedError(name));
    // Unref'd: a command that unwinds in time exits through finished(), not this.
    setTimeout(() => this.#exitNow(), this.#graceMs).unref();
  }

  #exitNow(): never {
    this.say(this.signal.reason);
    process.exit(EXIT_INCOMPLETE);
  }
}
