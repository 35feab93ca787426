import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { appendFileSync, copyFileSync, existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { carriesRpalMark, markedBun } from "./elf-mark.ts";

let dir: string;
const prevCache = process.env.MESH_CACHE_DIR;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "rpal-elfmark-"));
  process.env.MESH_CACHE_DIR = join(dir, "cache");
});
afterAll(() => {
  if (prevCache === undefined) delete process.env.MESH_CACHE_DIR;
  else process.env.MESH_CACHE_DIR = prevCache;
  rmSync(dir, { recursive: true, force: true });
});

describe("elf-mark", () => {
  test("a marked copy of bun carries RPAL at offset 12, is owner-only, and still runs (--version)", () => {
    expect(carriesRpalMark(process.execPath)).toBe(false);
    const m = markedBun();
    expect(m.built).toBe(true);
    expect(m.path.startsWith(join(dir, "cache", "bun-rpal"))).toBe(true);
    expect(carriesRpalMark(m.path)).toBe(true);
    expect(statSync(m.path).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, "cache")).mode & 0o777).toBe(0o700);
    const run = Bun.spawnSync([m.path, "--version"]);
    expect(run.exitCode).toBe(0);
    expect(run.stdout.toString().trim()).toBe(Bun.version);
    // Cached: the second call does not rebuild.
    expect(markedBun()).toMatchObject({ path: m.path, built: false });
  });

  test("rebuilt when the source executable changes; the stale copy is removed", () => {
    const src = join(dir, "true-copy");
    copyFileSync("/bin/true", src);
    const first = markedBun(src);
    expect(first.built).toBe(true);
    expect(Bun.spawnSync([first.path]).exitCode).toBe(0);
    expect(markedBun(src).built).toBe(false);
    appendFileSync(src, Buffer.from([0])); // a different binary (size, mtime and hash change)
    const second = markedBun(src);
    expect(second.built).toBe(true);
    expect(second.path).not.toBe(first.path);
    expect(existsSync(first.path)).toBe(false);
    expect(Bun.spawnSync([second.path]).exitCode).toBe(0);
  });

  test("a file that is not ELF is reported, not marked", () => {
    const junk = join(dir, "junk");
    writeFileSync(junk, "#!/bin/sh\necho hi\n");
    expect(() => carriesRpalMark(junk)).toThrow(/not an ELF executable/);
    expect(() => markedBun(junk)).toThrow(/not an ELF executable/);
  });
});
