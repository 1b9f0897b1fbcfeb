/**
 * `--progress=json`: one NDJSON event per second on stderr while a session runs, and a final
 * one (`final: true`) when it ends, whatever the outcome. Schema 1 (README, "Progress"):
 *
 *   {"event":"progress","schema":1,"phase":"sync"|"verify","bytesCompared":N,"bytesTotal":N,
 *    "bytesChanged":N,"wireBytesSent":N,"rate":N,"etaSeconds":N|null,"elapsedSeconds":N,
 *    "final":bool}
 *
 * wireBytesSent is absent for a local sync; rate is bytes compared per second; etaSeconds is
 * null while the rate is 0. A folder sync adds "filesDone" and "filesTotal".
 */
import type { Reading } from "./progress-meter.ts";

export const PROGRESS_SCHEMA = 1;

export interface ProgressEvent {
  event: "progress";
  schema: typeof PROGRESS_SCHEMA;
  phase: "sync" | "verify";
  bytesCompared: number;
  bytesTotal: number;
  bytesChanged: number;
  wireBytesSent?: number;
  rate: number;
  etaSeconds: number | null;
  elapsedSeconds: number;
  filesDone?: number;
  filesTotal?: number;
  final: boolean;
}

export function progressEvent(r: Reading, o: { local: boolean; phase: "sync" | "verify"; final: boolean }): ProgressEvent {
  return {
    event: "progress",
    schema: PROGRESS_SCHEMA,
    phase: o.phase,
    bytesCompared: r.bytesCompared,
    bytesTotal: r.bytesTotal,
    bytesChanged: r.bytesChanged,
    ...(o.local ? {} : { wireBytesSent: r.wireBytesSent }),
    rate: Math.round(r.rate),
    etaSeconds: r.etaSeconds === undefined ? null : Math.round(r.etaSeconds * 10) / 10,
    elapsedSeconds: Math.round(r.elapsedSeconds * 1000) / 1000,
    ...(r.filesTotal === undefined ? {} : { filesDone: r.filesDone ?? 0, filesTotal: r.filesTotal }),
    final: o.final,
  };
}
