/**
 * Which connection the code now running serves: each connection's handler runs inside
 * `connectionContext.run(...)` (AsyncLocalStorage, on Deno and Node alike), so a failure
 * that escapes every handler (the process-level safety net of `ssync listen`) can still
 * name the session it came from. The listener fills in the key and the request as it
 * learns them.
 */
import { AsyncLocalStorage } from "node:async_hooks";

export interface ConnectionContext {
  /** "HOST:PORT" of the client. */
  peer: string;
  /** Its key's fingerprint, once the handshake authenticated it. */
  key?: string;
  /** What it asked for, e.g. `push "vm.img"`, once OPEN arrived. */
  request?: string;
}

export const connectionContext = new AsyncLocalStorage<ConnectionContext>();

/** "the session of PEER (key K, push "x")", or undefined outside any connection. */
export function describeCurrentConnection(): string | undefined {
  const c = connectionContext.getStore();
  if (c === undefined) return undefined;
  const details = [c.key && `key ${c.key}`, c.request].filter(Boolean).join(", ");
  return `the connection from ${c.peer}${details ? ` (${details})` : ""}`;
}
