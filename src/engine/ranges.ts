/**
 * Cutting a file into ranges and jobs along its data extents.
 *
 * Invariants:
 * - Ranges are block-aligned, disjoint, ascending and cover [0, size) exactly; only the last
 *   may end on a partial block (at `size`).
 * - Every range is ≤ MAX_RANGE_BLOCKS blocks; a data range starts on data and holds
 *   ≤ DATA_RANGE_BYTES of it (its holes not counted); a hole range holds none.
 * - Extents are fetched a window at a time, so a fragmented file costs bounded memory.
 */
import { MAX_RANGE_BLOCKS } from "../../protocol/constants.ts";
import type { Extent, Storage } from "../storage/storage.ts";

export interface Range {
  offset: number;
  length: number;
  /** Whether the local side holds data in the range (false: a hole, nothing to read). */
  data: boolean;
  /**
   * The data extents in the range as the plan listed them (clipped to it; empty for a hole),
   * so that the range's diff need not list them again. A file that changes after the plan is
   * the source watch's to catch (source-watch.ts), as it is for a change after any listing.
   */
  extents?: Extent[];
}

/**
 * Data bytes of one data range (a few jobs; its holes not counted): each range costs a
 * request and its reply, a RANGE_DONE and its reply, so ranges much smaller than this spend
 * the session's thread on records; much larger would hold more job results per range.
 */
export const DATA_RANGE_BYTES = 4 << 20;
/** Bytes of extents fetched at once while planning. */
const PLAN_WINDOW = 64 * 2 ** 30;

/** Block-aligned spans [offset, offset+length) covering the data extents within [start, end). */
export function dataSpans(
  extents: readonly Extent[],
  range: { start: number; end: number },
  options: { blockSize: number; maxBytes: number },
): Extent[] {
  const { blockSize: bs, maxBytes } = options;
  const merged: { start: number; end: number }[] = [];
  for (const e of extents) {
    const start = Math.max(range.start, Math.floor(e.offset / bs) * bs);
    const end = Math.min(range.end, Math.ceil((e.offset + e.length) / bs) * bs);
    if (end <= start) continue;
    const last = merged[merged.length - 1];
    if (last && start <= last.end) last.end = Math.max(last.end, end);
    else merged.push({ start, end });
  }
  const out: Extent[] = [];
  const step = Math.max(bs, Math.floor(maxBytes / bs) * bs);
  for (const m of merged) {
    for (let at = m.start; at < m.end; at += step) out.push({ offset: at, length: Math.min(step, m.end - at) });
  }
  return out;
}

/** Consecutive spans one job reads: [offset, offset+length) holds `spans` (ascending) and the holes between them. */
export interface SpanGroup {
  offset: number;
  length: number;
  spans: Extent[];
  /** The spans' bytes: what the job reads. */
  dataBytes: number;
}

/**
 * `spans` (ascending, disjoint) cut into groups of consecutive spans holding ≤ maxData bytes
 * each (a span longer than that alone). A group may reach across long holes: a job's digest
 * lists hold only its spans' blocks (scan-job.ts).
 */
export function groupSpans(spans: readonly Extent[], maxData: number): SpanGroup[] {
  const groups: SpanGroup[] = [];
  let g: SpanGroup | undefined;
  for (const s of spans) {
    if (g && g.dataBytes + s.length <= maxData) {
      g.spans.push(s);
      g.dataBytes += s.length;
      g.length = s.offset + s.length - g.offset;
      continue;
    }
    g = { offset: s.offset, length: s.length, spans: [s], dataBytes: s.length };
    groups.push(g);
  }
  return groups;
}

/** The extents of ascending `extents` (from index `first` on) that overlap [start, end), clipped to it. */
export function clipExtents(extents: readonly Extent[], first: number, range: { start: number; end: number }): Extent[] {
  const out: Extent[] = [];
  for (let i = first; i < extents.length && extents[i].offset < range.end; i++) {
    const a = Math.max(extents[i].offset, range.start);
    const b = Math.min(extents[i].offset + extents[i].length, range.end);
    if (b > a) out.push({ offset: a, length: b - a });
  }
  return out;
}

/**
 * Ranges covering [0, size) of `store`. A data range starts at a data extent and takes in the
 * extents that follow while it holds ≤ DATA_RANGE_BYTES of data, then the hole after its last
 * one, up to the next range's data, all within MAX_RANGE_BLOCKS blocks; what no data range
 * took is cut into hole ranges. So an image of many small extents costs a round trip per few
 * MiB of data, not one per extent and one per hole between them (the holes inside a range are
 * still not read: diffRange and digestRange read only the data extents).
 */
export async function* planRanges(
  store: Storage,
  options: { size: number; blockSize: number },
): AsyncGenerator<Range> {
  const { size, blockSize } = options;
  const maxLength = MAX_RANGE_BLOCKS * blockSize;
  let at = 0;
  const holesUpTo = function* (end: number): Generator<Range> {
    while (at < end) {
      const length = Math.min(maxLength, end - at);
      yield { offset: at, length, data: false, extents: [] };
      at += length;
    }
  };
  /** Extents listed and not yet handed to a range, ascending (from `listedHead` on). */
  let listed: Extent[] = [];
  let listedHead = 0;
  /** The listed extents in [from, end), clipped; those ending by `end` are dropped from the list. */
  const extentsIn = (from: number, end: number): Extent[] => {
    const out = clipExtents(listed, listedHead, { start: from, end });
    while (listedHead < listed.length && listed[listedHead].offset + listed[listedHead].length <= end) listedHead++;
    return out;
  };
  /** The data range `r`, with the hole after it up to `next` (within MAX_RANGE_BLOCKS blocks). */
  const close = (r: { offset: number }, next: number): Range => {
    const end = Math.min(next, r.offset + maxLength);
    at = end;
    return { offset: r.offset, length: end - r.offset, data: true, extents: extentsIn(r.offset, end) };
  };
  /** The data range being gathered: [open.offset, open.end) holding `data` bytes of spans. */
  let open: { offset: number; end: number; data: number } | undefined;
  for (let win = 0; win < size; win += PLAN_WINDOW) {
    const winEnd = Math.min(size, win + PLAN_WINDOW);
    const local = Math.min(winEnd, store.size);
    const extents = local > win ? await store.dataExtents(win, local) : [];
    listed = listed.slice(listedHead).concat(extents);
    listedHead = 0;
    for (const span of dataSpans(extents, { start: Math.max(win, open?.end ?? at), end: winEnd }, { blockSize, maxBytes: DATA_RANGE_BYTES })) {
      const spanEnd = span.offset + span.length;
      if (open && open.data + span.length <= DATA_RANGE_BYTES && spanEnd - open.offset <= maxLength) {
        open.end = spanEnd;
        open.data += span.length;
        continue;
      }
      if (open) yield close(open, span.offset);
      yield* holesUpTo(span.offset);
      open = { offset: span.offset, end: spanEnd, data: span.length };
    }
  }
  if (open) yield close(open, size);
  yield* holesUpTo(size);
}
