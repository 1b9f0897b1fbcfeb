/** What one side of a sync works with, and the counters it keeps. */
import type { HashAlgorithm } from "../../protocol/constants.ts";
import type { HoleMethod, Storage } from "../storage/storage.ts";
import type { ReadAhead } from "./read-ahead.ts";
import type { WorkerPool } from "./worker-pool.ts";

export interface SideContext {
  pool: WorkerPool;
  store: Storage;
  hash: HashAlgorithm;
  key: Uint8Array;
  blockSize: number;
  /** The final size: the source's size. Ranges never reach past it. */
  size: number;
  stats: SideStats;
  signal: AbortSignal;
  /** Starts the kernel reading this side's data ahead of the jobs (engine/read-ahead.ts); absent: no hints. */
  readAhead?: ReadAhead;
}

export class SideStats {
  /** Bytes read from this side's file. */
  bytesRead = 0;
  /** Bytes of differing blocks read a second time to refine them (REFINE, PATCH; most likely from the page cache). */
  bytesReread = 0;
  /** Destination: bytes whose digests came from its signature cache, hence not read (spec §5.10). */
  bytesFromCache = 0;
  /** Bytes of ranges known to be holes, hence not read. */
  holeBytesSkipped = 0;
  /** Destination: bytes written by DATA. */
  bytesWritten = 0;
  /** Destination: bytes turned into holes (or zeros) by ZERO. */
  bytesPunched = 0;
  holeMethod: HoleMethod | undefined;
  /** Source: blocks and bytes that differed and had data (sent as DATA). */
  blocksSent = 0;
  bytesSent = 0;
  /** Source: DATA payload bytes as they went on the wire (after compression). */
  dataBytesOnWire = 0;
  /** Source: bytes that differed and were zero in the source (sent as ZERO, or zero pages of a PATCH). */
  bytesZeroed = 0;
  /** Source: blocks whose sub-digests it asked for (REFINE). */
  blocksRefined = 0;
  /** Source: blocks sent page by page (PATCH); bytesSent counts only their data pages. */
  blocksPatched = 0;
}
