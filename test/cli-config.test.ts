/**
 * The config file <config>/config (issue 10, scope 5): host aliases and default options,
 * through the real CLI and a real listener on 127.0.0.1.
 * - `ssync push vm.img backup:` dials the alias's address and port and trusts only its
 *   host-key; a port on the command line wins over the alias's;
 * - defaults apply where the command line says nothing, flags win, an alias's options win
 *   over the defaults, an option a command does not take is left out;
 * - an unknown key (with the nearest one), a bad value, a key outside a host block: exit 2,
 *   naming the file and line; a file others may write is refused.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { configuredFlags, parseConfig } from "../src/cli/config-file.ts";
import { ConfigError } from "../src/util/errors.ts";
import { withCliSetup } from "./helpers/cli-setup.ts";
import { runCli } from "./helpers/network.ts";
import { fileHash, makeSparseFile, withTempDir } from "./helpers/sparse.ts";

const MiB = 1024 ** 2;
const T = { timeout: 60_000 };

function writeConfig(configHome: string, text: string): string {
  const file = path.join(configHome, "ssync", "config");
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  fs.writeFileSync(file, text, { mode: 0o600 });
  fs.chmodSync(file, 0o600);
  return file;
}

describe("the config file", () => {
  test("a host alias: address, port and host-key; an explicit port wins", { timeout: 120_000 }, async () => {
    await withCliSetup({}, async ({ dir, client, root, listener }) => {
      writeConfig(client, [
        "# nightly backups",
        "host backup",
        "    address 127.0.0.1",
        `    port ${listener.port}`,
        `    host-key ${listener.fingerprint}   # as ssync listen printed it`,
        "host wrongkey",
        "    address 127.0.0.1",
        `    port = ${listener.port}`,
        "    host-key SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "",
      ].join("\n"));
      const src = path.join(dir, "vm.img");
      makeSparseFile(src, { size: 4 * MiB, chunks: [{ offset: 0, length: 256 * 1024, seed: 1 }] });

      // No --accept-new: the alias's host-key is the trust.
      let r = await runCli(["push", "--json", src, "backup:"], { config: client });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(JSON.parse(r.stdout).destination, `127.0.0.1:${listener.port}:vm.img`);
      assert.equal(fileHash(path.join(root, "vm.img")), fileHash(src));
      r = await runCli(["pull", `backup:vm.img`, path.join(dir, "back.img")], { config: client });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(fileHash(path.join(dir, "back.img")), fileHash(src));

      // The alias's fingerprint is enforced even though the key is pinned now.
      r = await runCli(["push", src, "wrongkey:"], { config: client });
      assert.equal(r.code, 5, r.stderr);
      assert.match(r.stderr, /not SHA256:A+ as given by --host-key/);

      // A port on the command line overrides the alias's: port 1 refuses the connection.
      r = await runCli(["push", src, "backup:1:vm.img"], { config: client });
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /Cannot connect to 127\.0\.0\.1:1: connection refused/);

      // known-hosts remove takes an alias too.
      r = await runCli(["known-hosts", "remove", "backup"], { config: client });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^Removed 127\\.0\\.0\\.1:${listener.port} `));
    });
  });

  test("defaults: where the command line says nothing; flags win; an alias's options win over them", T, async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      makeSparseFile(src, { size: 2 * MiB, chunks: [{ offset: 0, length: 64 * 1024 }] });
      writeConfig(dir, "block-size 16K\nhash = hmac-sha256\nidle-timeout 30   # push and pull only: sync leaves it out\n");
      const sync = async (...flags: string[]) => {
        const r = await runCli(["sync", "--json", ...flags, src, path.join(dir, "dst.img")], { config: dir });
        assert.equal(r.code, 0, r.stderr);
        return JSON.parse(r.stdout);
      };
      const s = await sync();
      assert.equal(s.blockSize, 16 * 1024);
      assert.equal(s.hash, "hmac-sha256");
      const flagged = await sync("--block-size", "32K");
      assert.equal(flagged.blockSize, 32 * 1024, "the command line wins");
      assert.equal(flagged.hash, "hmac-sha256");
    });
    const config = parseConfig("wait 9\ncompress never\nhost b\n  address h\n  wait 30\n", { file: "c" });
    assert.deepEqual(config.defaults, { wait: "9", compress: "never" });
    assert.deepEqual(config.hosts.get("b")?.options, { wait: "30" });
    const alias = config.hosts.get("b");
    assert.deepEqual(configuredFlags("push", {}, config, alias), { wait: "30", compress: "never" }, "the alias's wait wins");
    assert.deepEqual(configuredFlags("push", { wait: "0" }, config, alias), { wait: "0", compress: "never" }, "the flag wins");
    const remoteOnly = parseConfig("idle-timeout 30\nhost k\n  key /k\n  host-key SHA256:" + "A".repeat(43) + "\n", { file: "c" });
    assert.deepEqual(configuredFlags("sync", {}, remoteOnly), {}, "sync takes no --idle-timeout");
    assert.deepEqual(configuredFlags("pull", {}, remoteOnly, remoteOnly.hosts.get("k")), {
      idleTimeout: "30",
      key: "/k",
      hostKey: "SHA256:" + "A".repeat(43),
    });
  });

  test("mistakes name the file and line, and the nearest key; exit 2, code config under --json", T, async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      makeSparseFile(src, { size: MiB, chunks: [] });
      const cases: [string, RegExp][] = [
        ["wait 5\ncompres always\n", /line 2: unknown key compres; did you mean compress\?$/],
        ["block-size 3K\n", /line 1: Invalid --block-size 3K/],
        ["address 10.0.0.1\n", /line 1: address belongs to a host alias/],
        ["host a\n  port 7O70\n", /line 2: Invalid port "7O70"/],
        ["host a\nhost a\n", /line 2: host a is defined twice/],
        ["host a:1\n", /line 1: host a:1: an alias is/],
        ["host a\n  key relative/key\n", /line 2: key relative\/key: give an absolute path/],
        ["verify maybe\n", /line 1: verify takes yes or no/],
      ];
      for (const [text, expected] of cases) {
        const file = writeConfig(dir, text);
        const r = await runCli(["sync", src, path.join(dir, "dst.img")], { config: dir });
        assert.equal(r.code, 2, `${JSON.stringify(text)}: ${r.stderr}`);
        assert.ok(r.stderr.includes(`Invalid config ${file} line`), r.stderr);
        assert.match(r.stderr.trim(), expected, JSON.stringify(text));
        assert.equal(fs.existsSync(path.join(dir, "dst.img")), false);
      }
      const json = await runCli(["sync", "--json", src, path.join(dir, "dst.img")], { config: dir });
      assert.equal(JSON.parse(json.stdout).error.code, "config");
      assert.throws(() => parseConfig("bwlimt 5M\n", { file: "f" }), (e) => e instanceof ConfigError && /did you mean bwlimit\?/.test(e.message));
    });
  });

  test("a config file others may write is refused, as authorized_keys is", T, async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      makeSparseFile(src, { size: MiB, chunks: [] });
      const file = writeConfig(dir, "wait 1\n");
      fs.chmodSync(file, 0o666);
      const r = await runCli(["sync", src, path.join(dir, "dst.img")], { config: dir });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /Refusing config .*config: it is writable by group or others \(mode 0666\)/);
      fs.chmodSync(file, 0o644);
      const ok = await runCli(["sync", src, path.join(dir, "dst.img")], { config: dir });
      assert.equal(ok.code, 0, ok.stderr);
      // No config file: nothing to refuse, even under a folder others may write (as OpenSSH).
      fs.rmSync(file);
      fs.chmodSync(path.dirname(file), 0o777);
      const none = await runCli(["sync", src, path.join(dir, "dst.img")], { config: dir });
      assert.equal(none.code, 0, none.stderr);
      fs.writeFileSync(file, "wait 1\n", { mode: 0o600 });
      const planted = await runCli(["sync", src, path.join(dir, "dst.img")], { config: dir });
      assert.equal(planted.code, 2, planted.stderr);
      assert.match(planted.stderr, /Refusing config .*its folder .* is writable by group or others/);
    });
  });
});
