/**
 * contrib/systemd (issue 10, scope 4): the listener's unit and the nightly push's service and
 * timer as systemd reads them, and their commands as this ssync runs them.
 * 1. `systemd-analyze verify` accepts every unit without a warning (the binary path is this
 *    checkout's scripts/ssync: verify checks that ExecStart= can be executed);
 * 2. `systemd-analyze security --offline` rates both services' exposure at most 2.0, and the
 *    listener's unit has what the issue asks for (own user, ProtectSystem=strict, its --root
 *    in ReadWritePaths=, NoNewPrivileges, restart on failure, no capabilities);
 * 3. the listener's ExecStart= and Environment= (paths moved into a temporary folder) start a
 *    real listener, and the push service's ExecStart=, after the set-up its comments give,
 *    pushes the image to it.
 * Skips, saying what is missing, where systemd-analyze is not installed.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { runCli, SSYNC, startCliListener } from "./helpers/network.ts";
import { fileHash, makeSparseFile, withTempDir } from "./helpers/sparse.ts";

const T = { timeout: 90_000 };
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const UNITS = path.join(REPO, "contrib/systemd");
const SERVICES = ["ssync-listen.service", "ssync-push-nightly.service"];
const TIMER = "ssync-push-nightly.timer";
const BIN = "/usr/local/bin/ssync";

function missing(): string | undefined {
  const r = spawnSync("systemd-analyze", ["--version"], { encoding: "utf8" });
  if (r.error || r.status !== 0) return "systemd-analyze not found: install Debian's systemd package (apt-get install systemd)";
  return undefined;
}

/** The units with BIN replaced by this checkout's launcher, in `dir`. */
function unitsIn(dir: string): string[] {
  return [...SERVICES, TIMER].map((name) => {
    const text = fs.readFileSync(path.join(UNITS, name), "utf8").replaceAll(BIN, SSYNC);
    const file = path.join(dir, name);
    fs.writeFileSync(file, text);
    return file;
  });
}

/** Key=value settings of a unit file (the last one of each key, comments skipped). */
function settings(name: string): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (const line of fs.readFileSync(path.join(UNITS, name), "utf8").split("\n")) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (m) map.set(m[1], [...(map.get(m[1]) ?? []), m[2]]);
  }
  return map;
}

const one = (s: Map<string, string[]>, key: string) => s.get(key)?.at(-1);

test("systemd-analyze verify accepts the units without a warning", T, async (t) => {
  const why = missing();
  if (why) return t.skip(why);
  await withTempDir((dir) => {
    const files = unitsIn(dir);
    const r = spawnSync("systemd-analyze", ["verify", ...files], { encoding: "utf8", timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    const ours = r.stderr.split("\n").filter((l) => files.some((f) => l.includes(path.basename(f))));
    assert.deepEqual(ours, [], r.stderr);
  });
});

test("the services are hardened: exposure at most 2.0; the listener's unit has what the issue asks for", T, async (t) => {
  const s = settings("ssync-listen.service");
  const user = one(s, "User");
  assert.ok(user && user !== "root", `a dedicated user, not ${user}`);
  assert.equal(one(s, "DynamicUser") ?? "no", "no");
  assert.equal(one(s, "ProtectSystem"), "strict");
  assert.equal(one(s, "ProtectHome"), "yes");
  assert.equal(one(s, "PrivateTmp"), "yes");
  assert.equal(one(s, "NoNewPrivileges"), "yes");
  assert.equal(one(s, "Restart"), "on-failure");
  assert.equal(one(s, "CapabilityBoundingSet"), "");
  const root = /--root (\S+)/.exec(one(s, "ExecStart")!)?.[1];
  assert.ok(root && (one(s, "ReadWritePaths") ?? "").split(/\s+/).includes(root), `ReadWritePaths= holds the root ${root}`);
  assert.equal(settings(TIMER).get("Unit")?.[0] ?? TIMER.replace(".timer", ".service"), "ssync-push-nightly.service");

  const why = missing();
  if (why) return t.skip(why);
  await withTempDir((dir) => {
    for (const file of unitsIn(dir).filter((f) => f.endsWith(".service"))) {
      const r = spawnSync("systemd-analyze", ["security", "--offline=yes", "--threshold=20", "--no-pager", file], { encoding: "utf8", timeout: 30_000 });
      const level = /Overall exposure level for \S+: ([\d.]+)/.exec(r.stdout)?.[1];
      assert.equal(r.status, 0, `${path.basename(file)}: exposure ${level} is above 2.0:\n${r.stdout.split("\n").filter((l) => l.startsWith("✗")).join("\n")}`);
      assert.ok(level !== undefined && Number(level) <= 2.0, r.stdout.slice(-500));
    }
  });
});

/** A unit's Environment= as a map; its paths under /var/lib moved into `dir`. */
function environment(s: Map<string, string[]>, dir: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const item of (s.get("Environment") ?? []).join(" ").split(/\s+/).filter(Boolean)) {
    const [k, v] = item.split("=");
    env[k] = v.replace(/^\/var\/lib/, path.join(dir, "var/lib"));
  }
  return env;
}

test("the units' commands run: the listener's ExecStart serves, the push service's ExecStart pushes to it", T, async () => {
  await withTempDir(async (dir) => {
    const move = (p: string) => path.join(dir, p);
    const listen = settings("ssync-listen.service");
    const push = settings("ssync-push-nightly.service");
    // StateDirectory= and ConfigurationDirectory=, as systemd makes them.
    fs.mkdirSync(move("var/lib/ssync"), { recursive: true, mode: 0o700 });
    fs.mkdirSync(move("etc/ssync"), { recursive: true, mode: 0o755 });
    fs.mkdirSync(move("srv/images"), { recursive: true });
    fs.writeFileSync(move("etc/ssync/authorized_keys"), "", { mode: 0o644 });
    const args = one(listen, "ExecStart")!.split(/\s+/);
    assert.equal(args[0], BIN);
    const listenArgs = args.slice(2).map((a) => (a.startsWith("/") ? move(a.slice(1)) : a));
    const env = environment(listen, dir);
    assert.equal(env.XDG_CONFIG_HOME, move("var/lib"), "ssync's config folder is the state folder");

    // The push side's set-up, as its comments say (same user, same state folder here).
    const pushEnv = environment(push, dir);
    const keygen = await runCli(["keygen"], { config: pushEnv.XDG_CONFIG_HOME });
    assert.equal(keygen.code, 0, keygen.stderr);
    fs.appendFileSync(move("etc/ssync/authorized_keys"), fs.readFileSync(move("var/lib/ssync/id_ssync.pub")));
    fs.chmodSync(move("etc/ssync/authorized_keys"), 0o644);

    const listener = await startCliListener(listenArgs, { config: env.XDG_CONFIG_HOME, env });
    try {
      assert.ok(fs.existsSync(move("var/lib/ssync/host_key")), "the host key is made in the state folder");
      const pushArgs = one(push, "ExecStart")!.split(/\s+/);
      assert.equal(pushArgs[0], BIN);
      const image = move("var/lib/libvirt/images/vm.img");
      fs.mkdirSync(path.dirname(image), { recursive: true });
      makeSparseFile(image, { size: 4 << 20, chunks: [{ offset: 0, length: 1 << 20, seed: 3 }] });
      const remote = `127.0.0.1:${listener.port}:vm.img`;
      const rest = pushArgs.slice(1).map((a) => (a.startsWith("/") ? move(a.slice(1)) : a.replace(/^backup\.lan:7070:/, "127.0.0.1:7070:")));
      const command = rest.map((a) => (a === "127.0.0.1:7070:vm.img" ? remote : a));
      assert.ok(command.includes(remote), `the push names a remote: ${rest.join(" ")}`);
      const pin = await runCli(["push", "--host-key", listener.fingerprint, "--dry-run", image, remote], { config: pushEnv.XDG_CONFIG_HOME });
      assert.equal(pin.code, 0, pin.stderr);
      const r = await runCli(command, { config: pushEnv.XDG_CONFIG_HOME });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(fileHash(move("srv/images/vm.img")), fileHash(image));
    } finally {
      await listener.stop();
    }
  });
});
