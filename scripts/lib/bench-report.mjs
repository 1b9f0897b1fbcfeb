// The bench's printout: a table of medians, then the acceptance ratios of issue 9, each with
// its target and PASS/FAIL.
import { median } from "./bench-proc.mjs";

const MiB = 1024 * 1024;
export const fmtS = (s) => (Number.isFinite(s) ? s.toFixed(s < 10 ? 2 : 1) : "-");
export const fmtMiB = (b) => (Number.isFinite(b) ? (b >= 1024 * MiB ? `${+(b / 1024 / MiB).toFixed(2)} GiB` : `${+(b / MiB).toFixed(1)} MiB`) : "-");
const rssMiB = (k) => (k > 0 ? `${(k / 1024).toFixed(0)}` : "-");

/** Medians of a row's runs: seconds, RSS, and the summary figures of ssync rows. */
export function medians(row) {
  const m = (f) => median(row.results.map(f).filter((x) => Number.isFinite(x)));
  const s = (f) => m((r) => (r.summary ? f(r.summary) : NaN));
  return {
    seconds: m((r) => r.seconds),
    clientKiB: m((r) => r.rssKiB),
    listenerKiB: m((r) => r.listenerKiB ?? NaN),
    dataBytes: s((x) => x.dataBytesSent),
    dataOnWire: s((x) => x.dataBytesOnWire),
    wire: s((x) => x.wireBytesSent + x.wireBytesReceived),
    compared: s((x) => x.bytesCompared),
    signature: s((x) => signatureBytes(x, row.mode).bytes),
    signatureExact: row.results.every((r) => !r.summary || signatureBytes(r.summary, row.mode).exact),
    ssyncSeconds: s((x) => x.seconds),
  };
}

/**
 * Digest bytes the two sides exchanged: the summary's signatureBytes (SIGS_REPLY and READ_DIFF
 * records) when ssync reports it; else an upper bound from the wire — everything the client
 * received (push, local sync: SIGS_REPLY plus small ACK/OPEN_OK/COMMIT_OK records) or sent (pull:
 * READ_DIFF plus small requests).
 */
export function signatureBytes(summary, mode) {
  if (Number.isFinite(summary.signatureBytes)) return { bytes: summary.signatureBytes, exact: true };
  return { bytes: mode === "pull" ? summary.wireBytesSent : summary.wireBytesReceived, exact: false };
}

export function printTable(rows, { refs }) {
  const head = ["case", "row", "median s", "runs s", "ratio", "RSS MiB c/l", "DATA", "on wire", "sig/compared"];
  const lines = [head];
  for (const row of rows) {
    const m = medians(row);
    const ref = refs(row);
    const rss = row.kind === "ssync" ? `${rssMiB(m.clientKiB)}${row.mode === "local" ? "" : `/${rssMiB(m.listenerKiB)}`}` : rssMiB(m.clientKiB);
    lines.push([
      row.case,
      row.label,
      fmtS(m.seconds),
      row.results.map((r) => fmtS(r.seconds)).join(" "),
      ref ? `${(m.seconds / ref.seconds).toFixed(2)}× ${ref.name}` : "",
      rss,
      row.kind === "ssync" ? fmtMiB(m.dataBytes) : "",
      row.kind === "ssync" ? fmtMiB(m.wire) : "",
      row.kind === "ssync" ? `${m.signatureExact ? "" : "≤"}${((100 * m.signature) / m.compared).toFixed(4)}%` : "",
    ]);
  }
  const w = head.map((_, i) => Math.max(...lines.map((l) => l[i].length)));
  const right = new Set([2, 5, 6, 7, 8]);
  let last = "";
  lines.forEach((l, k) => {
    const cells = l.map((c, i) => (i === 0 && k > 1 && c === last ? "" : c));
    if (k > 0) last = l[0];
    console.log(cells.map((c, i) => (right.has(i) ? c.padStart(w[i]) : c.padEnd(w[i]))).join("  ").trimEnd());
    if (k === 0) console.log("-".repeat(w.reduce((a, b) => a + b + 2, 0)));
  });
}

/** One acceptance line: value ≤ target → PASS; a missing figure says why. */
export function verdict(name, value, target, detail, unit = "×") {
  if (!Number.isFinite(value)) return { name, line: `  ${"n/a".padEnd(5)} ${name}: not measured (its case, row or baseline did not run: see --cases, --rows and "skipped" above)`, pass: null };
  const pass = value <= target;
  const v = unit === "%" ? `${value.toFixed(4)}%` : unit === "MiB" ? `${value.toFixed(0)} MiB` : `${value.toFixed(unit === "" ? 3 : 2)}${unit}`;
  const t = unit === "%" ? `${target}%` : unit === "MiB" ? `${target} MiB` : `${target}${unit}`;
  return { name, line: `  ${(pass ? "PASS" : "FAIL").padEnd(5)} ${name}: ${v} (target ≤ ${t}; ${detail})`, pass };
}
