import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ALLOW_TEST_DOUBLE_ENV, detectRpal, rpalUnavailableReason } from "./detect.ts";
import { buildLibrpalTestDouble } from "./double/build.ts";
import { rpalErrorText } from "./errors.ts";
import { rpalProcess } from "./librpal.ts";

let dir: string;
let double: string;
let cpuGood: string;
let cpuNoPku: string;
let marked: string;
let unmarked: string;
const prevCache = process.env.MESH_CACHE_DIR;

function elf(path: string, mark: boolean): string {
  const b = Buffer.alloc(64);
  b.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  if (mark) b.write("RPAL", 12, "latin1");
  writeFileSync(path, b);
  return path;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "rpal-detect-"));
  process.env.MESH_CACHE_DIR = join(dir, "cache");
  double = buildLibrpalTestDouble();
  cpuGood = join(dir, "cpuinfo-good");
  writeFileSync(cpuGood, "processor\t: 0\nflags\t\t: fpu sse pku ospke fsgsbase avx\n");
  cpuNoPku = join(dir, "cpuinfo-nopku");
  writeFileSync(cpuNoPku, "processor\t: 0\nflags\t\t: fpu sse fsgsbase avx\n");
  marked = elf(join(dir, "marked"), true);
  unmarked = elf(join(dir, "unmarked"), false);
});

afterAll(() => {
  if (prevCache === undefined) delete process.env.MESH_CACHE_DIR;
  else process.env.MESH_CACHE_DIR = prevCache;
  rmSync(dir, { recursive: true, force: true });
});

const pre = (d: ReturnType<typeof detectRpal>, name: string) => d.preconditions.find((p) => p.name === name)!;

describe("rpal detection", () => {
  test.skipIf(existsSync("/proc/rpal"))("on this stock machine the missing precondition named first is /proc/rpal, with the kernel-patches fix", () => {
    const d = detectRpal();
    expect(d.available).toBe(false);
    const kernel = pre(d, "kernel");
    expect(kernel.ok).toBe(false);
    expect(kernel.detail).toBe("/proc/rpal not found: this kernel has no RPAL");
    expect(kernel.fix).toContain("kernel-patches/README.md");
    expect(d.reason).toStartWith("/proc/rpal not found: this kernel has no RPAL; ");
    expect(rpalUnavailableReason()).toBe(d.reason!);
    expect(d.preconditions.map((p) => p.name)).toEqual(["platform", "kernel", "librpal", "executable", "cpu", "receiver shim"]);
    expect(pre(d, "receiver shim").ok).toBe(true); // gcc is installed here
  });

  test("kernel, ELF mark and CPU checks pass when /proc/rpal exists, the executable is marked and the CPU has pku+fsgsbase", () => {
    const d = detectRpal({ procRpalPath: cpuGood, cpuinfoPath: cpuGood, execPath: marked, env: {} });
    expect(pre(d, "kernel")).toMatchObject({ ok: true });
    expect(pre(d, "executable")).toMatchObject({ ok: true });
    expect(pre(d, "cpu")).toMatchObject({ ok: true, detail: "CPU has pku and fsgsbase" });
    expect(pre(d, "librpal").ok).toBe(false); // none installed here
    expect(d.reason).toStartWith("librpal.so not found");
  });

  test("each failing precondition says what is wrong and how to fix it", () => {
    const d = detectRpal({ procRpalPath: join(dir, "nope"), cpuinfoPath: cpuNoPku, execPath: unmarked, env: { MESH_LIBRPAL: join(dir, "missing.so") } });
    expect(pre(d, "cpu")).toMatchObject({ ok: false, detail: "CPU lacks pku" });
    expect(pre(d, "cpu").fix).toContain("Zen 3");
    expect(pre(d, "executable").detail).toContain('lacks the RPAL ELF mark ("RPAL" at offset 12)');
    expect(pre(d, "executable").fix).toContain("mesh up --transport rpal");
    expect(pre(d, "librpal")).toMatchObject({ ok: false, detail: `${join(dir, "missing.so")} not found` });
    expect(pre(d, "librpal").fix).toContain("MESH_LIBRPAL");
    const notElf = join(dir, "garbage.so");
    writeFileSync(notElf, "not a library");
    const g = detectRpal({ env: { MESH_LIBRPAL: notElf } });
    expect(pre(g, "librpal").ok).toBe(false);
    expect(pre(g, "librpal").detail).toContain("does not load as librpal v2");
    expect(pre(detectRpal({ platform: "darwin", arch: "arm64" }), "platform")).toMatchObject({ ok: false });
  });

  test("the librpal TEST DOUBLE is refused unless the test allows it, even under another name", () => {
    const renamed = join(dir, "librpal.so");
    copyFileSync(double, renamed);
    const refused = detectRpal({ env: { MESH_LIBRPAL: renamed } });
    expect(pre(refused, "librpal").ok).toBe(false);
    expect(pre(refused, "librpal").detail).toContain("TEST DOUBLE");
    expect(refused.available).toBe(false);
    const viaLdPath = detectRpal({ env: { LD_LIBRARY_PATH: dir } });
    expect(pre(viaLdPath, "librpal").detail).toContain("TEST DOUBLE");
    expect(() => rpalProcess(renamed)).toThrow(/TEST DOUBLE/);

    const allowed = detectRpal({ env: { MESH_LIBRPAL: renamed, [ALLOW_TEST_DOUBLE_ENV]: "1" } });
    expect(allowed.available).toBe(true);
    expect(pre(allowed, "librpal").detail).toContain("TEST DOUBLE, allowed by the test");
    expect(pre(allowed, "kernel").detail).toContain("skipped: the librpal TEST DOUBLE");
  });
});

describe("librpal error codes", () => {
  test("kernel and library codes become sentences; negative returns and unknown codes too", () => {
    expect(rpalErrorText(2)).toContain("no such RPAL service");
    expect(rpalErrorText(-116)).toBe("the peer's queue is full");
    expect(rpalErrorText(101)).toContain("/proc/rpal");
    expect(rpalErrorText(120)).toContain("invalid service");
    expect(rpalErrorText(99)).toBe("unknown librpal error code 99");
    expect(rpalErrorText(500)).toBe("unknown librpal error code 500");
  });
});
