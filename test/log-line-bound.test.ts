/**
 * A client cannot make the listener write a long line (review finding 1): journald cuts a
 * line at LineMax (2048 bytes before systemd 235, 48K since) and reads a `<N>` priority at
 * the start of each piece, so a long enough name would become a forged entry at a priority
 * the client chose.
 * 1. end to end: OPENs whose name is 4096 bytes of control characters (and one ending in a
 *    forged `<0>` line), pull and push, in text (journald) and json: every line the listener
 *    writes is at most MAX_LINE_BYTES and holds no raw control byte; the name is clipped and
 *    says how long it was; json lines stay whole objects;
 * 2. the Log alone: a message or field of any length gives a line of at most MAX_LINE_BYTES;
 *    text escapes a backslash, so the 6 characters "\u000a" typed in a name do not read as an
 *    escaped newline.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { encode } from "../protocol/codec.ts";
import { WorkerPool } from "../src/engine/worker-pool.ts";
import { Log, type LogFormat, MAX_LINE_BYTES } from "../src/listener/log.ts";
import { generateKeyPair } from "../src/noise/x25519.ts";
import { authorize, startListener, waitFor } from "./helpers/network.ts";
import { nextMessage, openMessage, rawConnect } from "./helpers/raw-client.ts";
import { withTempDir } from "./helpers/sparse.ts";

const T = { timeout: 60_000 };
// deno-lint-ignore no-control-regex
const RAW_CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

function checkLines(lines: string[], format: LogFormat): void {
  for (const line of lines) {
    const bytes = Buffer.byteLength(line);
    assert.ok(bytes <= MAX_LINE_BYTES, `a ${bytes}-byte line: ${line.slice(0, 200)}…`);
    assert.doesNotMatch(line, RAW_CONTROL, "no raw control character");
    if (format === "json") assert.equal(typeof JSON.parse(line), "object", "a json line is one whole object");
  }
}

for (const format of ["text", "json"] as const) {
  test(`a 4096-byte name of control bytes gives ${format} lines of at most ${MAX_LINE_BYTES} bytes, the name clipped`, T, async () => {
    await withTempDir(async (dir) => {
      const pool = new WorkerPool({ size: 1 });
      const lines: string[] = [];
      const log = new Log({ write: (l) => lines.push(l), format, journald: format === "text", verbose: true });
      const server = await startListener(dir, { pool, log });
      try {
        const key = generateKeyPair();
        authorize(server.authorizedKeys, key);
        const names = [
          "\x01".repeat(4096),
          // The review's probe: a forged session line at the point journald would cut.
          "\x01".repeat(3536) + "a".repeat(366) + '"<0>10.0.0.1:1 key SHA256:forged push "vm.img": committed',
          "\u0085".repeat(2048),
        ];
        for (const name of names) {
          for (const mode of ["pull", "push"] as const) {
            const conn = await rawConnect(server, key, dir);
            const before = lines.length;
            await conn.channel.send(encode(openMessage({ mode, name, size: 0, dryRun: false })));
            const reply = await nextMessage(conn);
            assert.equal(reply?.type, "ERROR", "the name is refused (too long a component)");
            await conn[Symbol.asyncDispose]();
            await waitFor(() => lines.slice(before).some((l) => /failed/.test(l)), { timeoutMs: 5000, what: "the session line" });
            checkLines(lines.slice(before), format);
            const line = lines.slice(before).find((l) => /failed/.test(l))!;
            assert.match(line, new RegExp(`…\\(${name.length} chars\\)`), "the clipped name says how long it was");
            assert.doesNotMatch(line, /<0>/, "the forged priority is not in the line: it is past the clip");
          }
        }
      } finally {
        await server.listener.close();
        await pool[Symbol.asyncDispose]();
      }
    });
  });
}

test("the Log alone: no line is longer than MAX_LINE_BYTES, whatever its message or fields", () => {
  for (const format of ["text", "json"] as const) {
    for (const journald of [false, true]) {
      const lines: string[] = [];
      const log = new Log({ write: (l) => lines.push(l), format, journald });
      const long = "\x01\u2028\\\"é😀".repeat(3000);
      log.warn(`peer key x: ${long}`, { peer: "127.0.0.1:1", file: long, outcome: long, bytesRead: 5 });
      log.info("x".repeat(10_000), { a: "y".repeat(10_000), b: "z".repeat(10_000), c: "w".repeat(10_000) });
      log.error("short", { file: "\x01".repeat(5000) });
      checkLines(lines, format);
      assert.equal(lines.length, 3);
      if (format === "json") {
        const first = JSON.parse(lines[0]);
        assert.equal(first.level, "warn");
        assert.equal(first.peer, "127.0.0.1:1", "short fields are kept whole");
        assert.equal(first.bytesRead, 5);
        assert.equal(JSON.parse(lines[2]).message, "short", "a long field is cut, not the short message");
      } else {
        assert.match(lines[0], journald ? /^<4>warning: peer key x: / : /^\S+ warning: peer key x: /);
        assert.match(lines[0], /…\(\d+ chars\)$/, "a cut line says so at its end");
      }
    }
  }
});

test("text lines escape a backslash: a name holding the characters \\u000a is not an escaped newline", () => {
  const lines: string[] = [];
  const log = new Log({ write: (l) => lines.push(l), journald: true });
  log.info("typed \\u000a, real \n");
  assert.equal(lines[0], "<6>typed \\\\u000a, real \\u000a");
});
