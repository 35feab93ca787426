// Can the rpal transport work in this process? Each precondition is checked without side effects on
// the kernel (we stat /proc/rpal, we never open it: opening registers nothing today, but a detection
// path has no business poking a kernel interface) and reported as ✓/✗ with the reason and the fix.
// `auto` uses rpal only when every one holds; a forced rpal fails with the first failing reason.
import { existsSync, readFileSync, statSync } from "node:fs";
import { delimiter, join } from "node:path";
import { isTestDouble, testDoubleAllowed } from "./double-guard.ts";
import { carriesRpalMark } from "./elf-mark.ts";
import { shimBuildable } from "./shim.ts";

export { ALLOW_TEST_DOUBLE_ENV, isTestDouble, TEST_DOUBLE_MARKER } from "./double-guard.ts";
import { loadLibrpal } from "./librpal.ts";

export interface Precondition {
  /** Short name: "kernel", "librpal", "executable", "cpu", "platform". */
  name: string;
  ok: boolean;
  /** What was found (✓) or what is wrong (✗). */
  detail: string;
  /** How to fix it (only when !ok). */
  fix?: string;
}

export interface RpalDetection {
  available: boolean;
  preconditions: Precondition[];
  /** The librpal that would be used, when one was found. */
  librpalPath?: string;
  /** The first failing precondition as one sentence (undefined when available). */
  reason?: string;
}

export interface DetectOptions {
  procRpalPath?: string;
  cpuinfoPath?: string;
  execPath?: string;
  env?: Record<string, string | undefined>;
  platform?: string;
  arch?: string;
}

const KERNEL_FIX = "boot a kernel with the RPAL patch series (RFC v2 on v6.15); see kernel-patches/README.md";

export const LIBRPAL_SEARCH_DIRS = [
  "/usr/local/lib",
  "/usr/local/lib64",
  "/usr/lib/x86_64-linux-gnu",
  "/usr/lib64",
  "/usr/lib",
  "/lib/x86_64-linux-gnu",
];

/** Where librpal would be loaded from: $MESH_LIBRPAL, then $LD_LIBRARY_PATH, then the usual dirs. */
export function findLibrpal(env: Record<string, string | undefined> = process.env): { path?: string; tried: string[] } {
  if (env.MESH_LIBRPAL) return { path: env.MESH_LIBRPAL, tried: [env.MESH_LIBRPAL] };
  const dirs = [...(env.LD_LIBRARY_PATH ?? "").split(delimiter).filter(Boolean), ...LIBRPAL_SEARCH_DIRS];
  const tried: string[] = [];
  for (const dir of dirs) {
    const p = join(dir, "librpal.so");
    tried.push(p);
    if (existsSync(p)) return { path: p, tried };
  }
  return { tried };
}

/** Checks a librpal file: exists, is not the test double (unless a test allowed it), loads, has the v2 API. */
export function checkLibrpal(path: string, env: Record<string, string | undefined> = process.env): Precondition {
  if (!existsSync(path)) {
    return {
      name: "librpal",
      ok: false,
      detail: `${path} not found`,
      fix: env.MESH_LIBRPAL
        ? "fix MESH_LIBRPAL or unset it to search the usual library paths"
        : "build librpal.so from the series' samples/rpal/librpal (kernel-patches/build-kernel.sh --librpal-only builds it) and install it, or set MESH_LIBRPAL",
    };
  }
  let double: boolean;
  try {
    double = isTestDouble(path);
  } catch (e) {
    return { name: "librpal", ok: false, detail: `cannot read ${path}: ${(e as Error).message}`, fix: "make it readable" };
  }
  if (double && !testDoubleAllowed(env)) {
    return {
      name: "librpal",
      ok: false,
      detail: `${path} is the rpal-mesh TEST DOUBLE of librpal, not the real library`,
      fix: "point MESH_LIBRPAL at the real librpal.so built from the RPAL series; the double is for tests only",
    };
  }
  try {
    loadLibrpal(path);
  } catch (e) {
    return {
      name: "librpal",
      ok: false,
      detail: `${path} does not load as librpal v2: ${(e as Error).message}`,
      fix: "rebuild librpal.so from the RFC v2 series' samples/rpal/librpal",
    };
  }
  return { name: "librpal", ok: true, detail: `${path}${double ? " (TEST DOUBLE, allowed by the test)" : ""}` };
}

export function cpuFlags(cpuinfoPath = "/proc/cpuinfo"): Set<string> {
  const text = readFileSync(cpuinfoPath, "utf8");
  const line = text.split("\n").find((l) => l.startsWith("flags"));
  return new Set(line ? line.slice(line.indexOf(":") + 1).trim().split(/\s+/) : []);
}

function checkPlatform(platform: string, arch: string): Precondition {
  if (platform === "linux" && arch === "x64") return { name: "platform", ok: true, detail: "x86-64 Linux" };
  return { name: "platform", ok: false, detail: `${platform}/${arch}: RPAL exists only for x86-64 Linux`, fix: "use shm or uds on this machine" };
}

function checkKernel(procRpal: string): Precondition {
  try {
    statSync(procRpal);
    return { name: "kernel", ok: true, detail: `${procRpal} present: the kernel has RPAL` };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "EPERM" || code === "EACCES") {
      return {
        name: "kernel",
        ok: false,
        detail: `${procRpal} refuses this process (${code}): the executable is not an RPAL binary`,
        fix: "run through `mesh up --transport rpal`, which launches a marked copy of bun",
      };
    }
    return { name: "kernel", ok: false, detail: `${procRpal} not found: this kernel has no RPAL`, fix: KERNEL_FIX };
  }
}

function checkFoundLibrpal(env: Record<string, string | undefined>): Precondition & { path?: string } {
  const found = findLibrpal(env);
  if (!found.path) {
    return {
      name: "librpal",
      ok: false,
      detail: `librpal.so not found (looked in ${found.tried.join(", ")})`,
      fix: "build librpal.so from the series' samples/rpal/librpal (kernel-patches/build-kernel.sh --librpal-only builds it) and install it, or set MESH_LIBRPAL",
    };
  }
  return { ...checkLibrpal(found.path, env), path: found.path };
}

function checkExecutable(execPath: string): Precondition {
  try {
    if (carriesRpalMark(execPath)) return { name: "executable", ok: true, detail: `${execPath} carries the RPAL ELF mark` };
    return {
      name: "executable",
      ok: false,
      detail: `${execPath} lacks the RPAL ELF mark ("RPAL" at offset 12)`,
      fix: "run through `mesh up --transport rpal`, which launches a marked copy of bun (see elf-mark.ts)",
    };
  } catch (e) {
    return { name: "executable", ok: false, detail: `cannot read ${execPath}: ${(e as Error).message}`, fix: "check the bun install" };
  }
}

function checkCpu(cpuinfoPath: string | undefined): Precondition {
  try {
    const flags = cpuFlags(cpuinfoPath);
    const missing = ["pku", "fsgsbase"].filter((f) => !flags.has(f));
    if (missing.length === 0) return { name: "cpu", ok: true, detail: "CPU has pku and fsgsbase" };
    return {
      name: "cpu",
      ok: false,
      detail: `CPU lacks ${missing.join(" and ")}`,
      fix: "RPAL needs memory protection keys and FSGSBASE: Intel Skylake-SP or later, AMD Zen 3 or later (in a VM: a CPU model that passes them through)",
    };
  } catch (e) {
    return { name: "cpu", ok: false, detail: `cannot read CPU flags: ${(e as Error).message}`, fix: "run on Linux with /proc mounted" };
  }
}

function checkShim(): Precondition {
  const s = shimBuildable();
  if (s.ok) return { name: "receiver shim", ok: true, detail: s.detail };
  return {
    name: "receiver shim",
    ok: false,
    detail: s.detail,
    fix: "install gcc (e.g. apt-get install gcc): the rpal receiver thread is a small C file compiled once into the cache directory",
  };
}

export function detectRpal(opts: DetectOptions = {}): RpalDetection {
  const env = opts.env ?? process.env;
  const lib = checkFoundLibrpal(env);
  const librpalPath = lib.ok ? lib.path : undefined;
  // Tests (and only tests, via ALLOW_TEST_DOUBLE_ENV) run the transport on the double: the kernel,
  // ELF mark and CPU are then not involved, so those checks report themselves skipped.
  const emulated = librpalPath !== undefined && isTestDouble(librpalPath);
  const skipped = (name: string): Precondition => ({
    name,
    ok: true,
    detail: "skipped: the librpal TEST DOUBLE emulates RPAL in user space (tests only)",
  });
  const { path: _path, ...libPre } = lib;
  const pre: Precondition[] = [
    checkPlatform(opts.platform ?? process.platform, opts.arch ?? process.arch),
    emulated ? skipped("kernel") : checkKernel(opts.procRpalPath ?? "/proc/rpal"),
    libPre,
    emulated ? skipped("executable") : checkExecutable(opts.execPath ?? process.execPath),
    emulated ? skipped("cpu") : checkCpu(opts.cpuinfoPath),
    checkShim(),
  ];
  const failing = pre.find((p) => !p.ok);
  return {
    available: !failing,
    preconditions: pre,
    librpalPath,
    reason: failing ? `${failing.detail}; ${failing.fix}` : undefined,
  };
}

let memo: RpalDetection | undefined;

/** Why rpal cannot be used in this process (first failing precondition with its fix), or undefined. Cached. */
export function rpalUnavailableReason(): string | undefined {
  memo ??= detectRpal();
  return memo.reason;
}

/**
 * Forgets the cached detection. For tests that switch MESH_LIBRPAL/MESH_RPAL_ALLOW_TEST_DOUBLE in
 * their own process: set the variables, reset, run, restore them, reset again.
 */
export function resetRpalDetection(): void {
  memo = undefined;
}

/** The cached detection for this process (what negotiate and `auto` use). */
export function processRpalDetection(): RpalDetection {
  memo ??= detectRpal();
  return memo;
}
