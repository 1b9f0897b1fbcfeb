/** Parsing of the engine options shared by sync, push and pull. */
import {
  DEFAULT_BLOCK_SIZE,
  type HashAlgorithm,
  HashCode,
  MAX_BLOCK_SIZE,
  MIN_BLOCK_SIZE,
} from "../../protocol/constants.ts";
import { UsageError } from "../util/errors.ts";

export interface EngineFlags {
  blockSize?: string | number;
  hash?: string;
  dryRun?: boolean;
  verify?: boolean;
  json?: boolean;
}

export interface EngineOptions {
  blockSize: number;
  hash: HashAlgorithm;
  dryRun: boolean;
  verify: boolean;
  json: boolean;
}

const UNITS: Record<string, number> = { "": 1, k: 1024, m: 1024 ** 2 };

export function parseBlockSize(text: string | number | undefined): number {
  if (text === undefined) return DEFAULT_BLOCK_SIZE;
  const m = /^(\d+)\s*([kKmM]?)(i?[bB])?$/.exec(String(text).trim());
  const n = m ? Number(m[1]) * UNITS[m[2].toLowerCase()] : NaN;
  if (!Number.isInteger(n) || n < MIN_BLOCK_SIZE || n > MAX_BLOCK_SIZE || (n & (n - 1)) !== 0) {
    throw new UsageError(`Invalid --block-size ${text}: use a power of two from 4K to 1M, such as 64K`);
  }
  return n;
}

export function parseHash(text: string | undefined): HashAlgorithm {
  const h = text ?? "hmac-sha256";
  if (!(h in HashCode)) {
    throw new UsageError(`Invalid --hash ${h}: use hmac-sha256 (default), blake3, or xxh128 (trusted data only)`);
  }
  return h as HashAlgorithm;
}

export function engineOptions(flags: EngineFlags): EngineOptions {
  return {
    blockSize: parseBlockSize(flags.blockSize),
    hash: parseHash(flags.hash),
    dryRun: flags.dryRun === true,
    verify: flags.verify === true,
    json: flags.json === true,
  };
}
