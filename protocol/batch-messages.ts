/**
 * Messages of batch connections (spec "Batches (protocol 2)"), a discriminated union on
 * `type` like messages.ts. BATCH and BATCH_OK open a batch (no slot prefix); the control
 * stream (slot 0) carries LIST, MKDIR, REMOVE, RMDIR and their replies: LIST_ENTRIES, and
 * v1's ACK and ERROR. File slots carry v1 messages (messages.ts) unchanged.
 */
import type { EntryKind } from "./constants.ts";
import type { AckMessage, ErrorMessage } from "./messages.ts";

/** Client → server, the connection's first record: make this a batch. */
export interface BatchMessage {
  type: "BATCH";
  cookie: 0;
  /** BATCH_VERSION. */
  version: number;
  /** File slots the client wants, ≥ 1. */
  slots: number;
}

/** Server → client: the batch is open; every record from now on carries a slot. */
export interface BatchOkMessage {
  type: "BATCH_OK";
  cookie: 0;
  /** File slots granted: 1 … min(wanted, MAX_SLOTS). */
  slots: number;
}

/** One entry of a LIST: a path relative to the folder listed, '/' between its components. */
export interface TreeEntry {
  kind: EntryKind;
  /** Bytes of a file; 0 for every other kind. */
  size: number;
  /** Modification time in ns since the epoch (negative before 1970). */
  mtimeNs: bigint;
  name: string;
}

/** Walks a folder (name relative to the root, "" for the root, or an export naming a folder). */
export interface ListMessage {
  type: "LIST";
  cookie: number;
  name: string;
}

/** A chunk of a LIST's entries; the one with `last` ends the LIST. */
export interface ListEntriesMessage {
  type: "LIST_ENTRIES";
  cookie: number;
  last: boolean;
  entries: TreeEntry[];
}

/** Creates one folder (its parent must exist); an existing folder is success. ACK. */
export interface MkdirMessage {
  type: "MKDIR";
  cookie: number;
  name: string;
}

/** Removes one regular file. ACK. */
export interface RemoveMessage {
  type: "REMOVE";
  cookie: number;
  name: string;
}

/** Removes one empty folder. ACK. */
export interface RmdirMessage {
  type: "RMDIR";
  cookie: number;
  name: string;
}

export type ControlRequest = ListMessage | MkdirMessage | RemoveMessage | RmdirMessage;
export type ControlMessage = ControlRequest | ListEntriesMessage | AckMessage | ErrorMessage;
