/**
 * The shape of the house (src/README.md): every import in src/ goes to its own room or to a
 * room below it, protocol/ imports nothing outside itself, and the wire constants are
 * defined in protocol/ only. Reads the source as text; runs none of it.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
/** Lowest first: a room may import only from rooms at its own index or below. */
const ROOMS = ["util", "platform", "storage", "engine", "noise", "trust", "net", "session", "listener", "cli"];

function sources(dir: string): string[] {
  return fs.readdirSync(path.join(REPO, dir), { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(".ts"))
    .map((f) => path.join(dir, f));
}

/** Relative specifiers of static imports, re-exports, dynamic imports and worker URLs. */
function localImports(file: string): string[] {
  const text = fs.readFileSync(path.join(REPO, file), "utf8");
  const found: string[] = [];
  const patterns = [/\bfrom\s+["'](\.{1,2}\/[^"']+)["']/g, /\bimport\s*\(\s*["'](\.{1,2}\/[^"']+)["']/g, /new URL\(\s*["'](\.{1,2}\/[^"']+)["']/g];
  for (const re of patterns) for (const m of text.matchAll(re)) found.push(m[1]);
  return found;
}

function roomOf(file: string): string {
  const [top, room] = file.split(path.sep);
  return top === "protocol" ? "protocol" : room;
}

test("no import runs upward; protocol/ stands alone", () => {
  const files = [...sources("src"), ...sources("protocol")];
  assert.ok(files.length > 50, `found only ${files.length} source files`);
  const problems: string[] = [];
  for (const file of files) {
    const from = roomOf(file);
    assert.ok(from === "protocol" || ROOMS.includes(from), `${file} is in no known room`);
    for (const spec of localImports(file)) {
      const target = path.relative(REPO, path.resolve(REPO, path.dirname(file), spec));
      if (!fs.existsSync(path.join(REPO, target))) problems.push(`${file} imports missing ${spec}`);
      const to = roomOf(target);
      if (from === "protocol") {
        if (to !== "protocol") problems.push(`${file} (protocol) imports ${target}`);
      } else if (to !== "protocol" && ROOMS.indexOf(to) > ROOMS.indexOf(from)) {
        problems.push(`${file} (${from}) imports upward into ${target} (${to})`);
      }
    }
  }
  assert.deepEqual(problems, []);
});

test("the wire constants are defined once, in protocol/", () => {
  const exported = (text: string) => [...text.matchAll(/export const (\w+)/g)].map((m) => m[1]);
  const wire = new Set(sources("protocol").flatMap((f) => exported(fs.readFileSync(path.join(REPO, f), "utf8"))));
  for (const name of ["PROTOCOL_VERSION", "HEADER_SIZE", "MAX_PAYLOAD", "MAX_RECORD", "MAX_NAME_LENGTH"]) {
    assert.ok(wire.has(name), `protocol/ defines ${name}`);
  }
  const again: string[] = [];
  for (const file of sources("src")) {
    const text = fs.readFileSync(path.join(REPO, file), "utf8");
    for (const m of text.matchAll(/^(?:export )?const (\w+)\s*=/gm)) if (wire.has(m[1])) again.push(`${file}: ${m[1]}`);
  }
  assert.deepEqual(again, []);
});
