/**
 * The remote syntax, HOST[:PORT][:PATH]: the segment after HOST is the port when all digits,
 * refused when a port mistyped (digits among O, o, l, I), else the start of PATH; HOST::PATH
 * names any path. A mistyped port is never taken for a file name.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { formatEndpoint, looksLikeRemote, parseEndpoint } from "../src/net/host-port.ts";

const T = { timeout: 10_000 };

test("endpoints: HOST, HOST:, HOST:PORT, HOST:PORT:PATH, HOST:PATH, HOST::PATH, IPv6 in brackets", T, () => {
  const at = (host: string, port: number, path: string | undefined, explicitPort: boolean) => ({ host, port, path, explicitPort });
  assert.deepEqual(parseEndpoint("backup"), at("backup", 7070, undefined, false));
  // An alias name and a colon, nothing more: the default port and path (host aliases).
  assert.deepEqual(parseEndpoint("backup:"), at("backup", 7070, undefined, false));
  assert.deepEqual(parseEndpoint("backup::"), at("backup", 7070, undefined, false));
  assert.deepEqual(parseEndpoint("backup:7000"), at("backup", 7000, undefined, true));
  assert.deepEqual(parseEndpoint("backup:7000:"), at("backup", 7000, undefined, true));
  assert.deepEqual(parseEndpoint("backup::vm/a.img"), at("backup", 7070, "vm/a.img", false));
  assert.deepEqual(parseEndpoint("backup:vm/a.img"), at("backup", 7070, "vm/a.img", false));
  assert.deepEqual(parseEndpoint("backup:vm:a.img"), at("backup", 7070, "vm:a.img", false));
  assert.deepEqual(parseEndpoint("backup:disk2"), at("backup", 7070, "disk2", false));
  // A path that is all digits, or looks like a mistyped port, is named after "::".
  assert.deepEqual(parseEndpoint("backup::7071"), at("backup", 7070, "7071", false));
  assert.deepEqual(parseEndpoint("backup::7O71"), at("backup", 7070, "7O71", false));
  assert.deepEqual(parseEndpoint("backup:7000:vm/a.img"), at("backup", 7000, "vm/a.img", true));
  assert.deepEqual(parseEndpoint("backup:7070:7071"), at("backup", 7070, "7071", true));
  assert.deepEqual(parseEndpoint("[::1]:7000:a:b"), at("::1", 7000, "a:b", true));
  assert.deepEqual(parseEndpoint("[fe80::1]"), at("fe80::1", 7070, undefined, false));
  assert.deepEqual(parseEndpoint("[::1]::x.img"), at("::1", 7070, "x.img", false));
  assert.deepEqual(parseEndpoint("[::1]:x.img"), at("::1", 7070, "x.img", false));
  assert.deepEqual(parseEndpoint("h::a:b", { defaultPort: 9 }), at("h", 9, "a:b", false));
  assert.throws(() => parseEndpoint("[::1"), /missing "\]"/);
  assert.throws(() => parseEndpoint("h:70000:x"), /Invalid port/);
  assert.throws(() => parseEndpoint(":7000"), /no host/);
  assert.equal(formatEndpoint({ host: "::1", port: 1 }), "[::1]:1");
});

test("a mistyped port is refused, with the spellings that work", T, () => {
  // The trap: 127.0.0.1:7O71 was the file "7O71" at port 7070.
  assert.throws(
    () => parseEndpoint("127.0.0.1:7O71"),
    (e: Error) => {
      assert.match(e.message, /"7O71" is not a port/);
      assert.match(e.message, /did you mean 7071\?/);
      assert.match(e.message, /127\.0\.0\.1::7O71/);
      assert.match(e.message, /127\.0\.0\.1:7070:7O71/);
      return true;
    },
  );
  assert.throws(() => parseEndpoint("backup:7l71:vm.img"), /"7l71" is not a port.*did you mean 7171\?.*backup::7l71:vm\.img/);
  assert.throws(() => parseEndpoint("[::1]:7O7O"), /did you mean 7070\?.*\[::1\]::7O7O/);
  assert.throws(() => parseEndpoint("backup:9999O"), (e: Error) => !/did you mean/.test(e.message) && /backup::9999O/.test(e.message));
  assert.throws(() => parseEndpoint("backup:1O:x"), /"1O" is not a port/);
});

test("an argument reads as a remote when a colon comes before any slash", T, () => {
  for (const remote of ["host:7071:x", "backup:", "backup::vm.img", "[::1]:7070:a", "a:b/c"]) assert.ok(looksLikeRemote(remote), remote);
  for (const local of ["./host:7071:x", "/dev/sdzz", "dir/a:b", "vm.img", ":x", ""]) assert.ok(!looksLikeRemote(local), local);
});
