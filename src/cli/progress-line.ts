/**
 * The live progress line on stderr: redrawn in place with a carriage return (no other escape
 * sequence, so it reads the same in a file), cut to the terminal's width, and cleared when
 * the session ends so that only the summary remains.
 */
import type { Reading } from "./progress-meter.ts";
import { bytes } from "./summary.ts";

/** "1.2 GiB / 8.0 GiB (15%)  412 MiB/s  ETA 0:17  sent 310 MiB  changed 1.1 GiB"; no "sent" for a local sync. */
export function formatProgressLine(r: Reading, o: { local: boolean; phase: "sync" | "verify" }): string {
  const percent = r.bytesTotal > 0 ? Math.floor((r.bytesCompared / r.bytesTotal) * 100) : 100;
  const parts = [
    ...(r.filesTotal === undefined ? [] : [`${r.filesDone ?? 0}/${r.filesTotal} files`]),
    `${o.phase === "verify" ? "verifying " : ""}${bytes(r.bytesCompared)} / ${bytes(r.bytesTotal)} (${percent}%)`,
    `${bytes(Math.round(r.rate))}/s`,
    `ETA ${r.etaSeconds === undefined ? "--:--" : clock(r.etaSeconds)}`,
    ...(o.local ? [] : [`sent ${bytes(r.wireBytesSent)}`]),
    `changed ${bytes(r.bytesChanged)}`,
  ];
  return parts.join("  ");
}

/** h:mm:ss, or m:ss under an hour. */
export function clock(seconds: number): string {
  const s = Math.ceil(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

/** One line that is redrawn over itself. */
export class ProgressLine {
  #out: { write(text: string): unknown; columns?: number };
  #shown = "";

  constructor(out: { write(text: string): unknown; columns?: number }) {
    this.#out = out;
  }

  /** Draws `text` over the last line; a wider line than the terminal would wrap and never be overdrawn. */
  draw(text: string): void {
    const width = this.#out.columns;
    const line = width && width > 1 ? text.slice(0, width - 1) : text;
    if (line === this.#shown) return;
    this.#out.write(`\r${line.padEnd(this.#shown.length)}`);
    this.#shown = line;
  }

  /** Blanks the line and returns to its start; nothing when nothing is shown. */
  clear(): void {
    if (this.#shown === "") return;
    this.#out.write(`\r${" ".repeat(this.#shown.length)}\r`);
    this.#shown = "";
  }
}
