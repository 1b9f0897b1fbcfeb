import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer, type Socket } from "node:net";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { acceptSecure } from "../src/net/secure-connection.ts";
import { generateKeyPair } from "../src/noise/x25519.ts";

/**
 * Record-layer throughput with sender and receiver in separate processes (as in real use):
 * a child process of the same runtime sends MIB records of 1 MiB over a secure connection
 * on 127.0.0.1; this process receives them. Prints MB/s.
 */
const MIB = Number(process.env.SSYNC_BENCH_MIB ?? 512);
const isDeno = "Deno" in globalThis;

function senderCode(port: number): string {
  const url = (path: string) => new URL(path, import.meta.url).href;
  return `
    import { connect } from "node:net";
    import { connectSecure } from ${JSON.stringify(url("../src/net/secure-connection.ts"))};
    import { generateKeyPair } from ${JSON.stringify(url("../src/noise/x25519.ts"))};
    const socket = connect(${port}, "127.0.0.1");
    const c = await connectSecure(socket, { staticKey: generateKeyPair(), verifyHost: () => true });
    const record = new Uint8Array(1 << 20).fill(7);
    for (let i = 0; i < ${MIB}; i++) await c.channel.send(record);
    await c[Symbol.asyncDispose]();
  `;
}

test(`record layer throughput, ${MIB} MiB between two processes`, { timeout: 120_000 }, async () => {
  const listener = createServer({ pauseOnConnect: true });
  listener.listen(0, "127.0.0.1");
  await once(listener, "listening");
  const port = (listener.address() as { port: number }).port;
  const code = senderCode(port);
  const args = isDeno
    ? ["eval", "--ext=ts", "--config", fileURLToPath(new URL("../deno.json", import.meta.url)), code]
    : ["--input-type=module", "-e", code];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "inherit", "inherit"] });
  const exited = once(child, "exit");
  try {
    const [socket] = (await once(listener, "connection")) as [Socket];
    listener.close();
    const conn = await acceptSecure(socket, { staticKey: generateKeyPair(), authorize: () => true });
    const start = performance.now();
    let bytes = 0;
    for (;;) {
      const record = await conn.channel.receive();
      if (record === null) break;
      bytes += record.length;
    }
    const seconds = (performance.now() - start) / 1000;
    await conn[Symbol.asyncDispose]();
    assert.equal(bytes, MIB * 2 ** 20);
    const runtime = isDeno ? "Deno" : `Node ${process.version}`;
    console.log(`record layer, two processes (${runtime}): ${(bytes / 1e6 / seconds).toFixed(0)} MB/s`);
    const [exitCode] = await exited;
    assert.equal(exitCode, 0);
  } finally {
    child.kill();
    listener.close();
  }
});
