// Builds the C reference programs with gcc when the bench runs, into bench/c/build/ (gitignored).
// A build is reused only if a stamp file records the same sources and flags: editing a .c or .h
// file, or changing the flags here, rebuilds. Outputs are written under a temporary name and renamed,
// so two benches started at once never run a half-written binary.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync, rmSync } from "node:fs";
import { join } from "node:path";

export const C_DIR = join(import.meta.dir, "..", "c");
export const BUILD_DIR = join(C_DIR, "build");

interface Target {
  out: string;
  sources: string[];
  headers: string[];
  flags: string[];
}

const CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror"];

export const TARGETS: Record<"pingpong" | "oneway" | "tsc" | "tcp-proxy", Target> = {
  pingpong: { out: "pingpong", sources: ["pingpong.c"], headers: ["common.h"], flags: CFLAGS },
  oneway: { out: "oneway", sources: ["oneway.c"], headers: ["common.h"], flags: CFLAGS },
  tsc: { out: "libbenchtsc.so", sources: ["tsc.c"], headers: [], flags: [...CFLAGS, "-shared", "-fPIC"] },
  // bench-mesh's floor for a sidecar's CPU: a byte forwarder making the sidecars' per-call syscalls.
  "tcp-proxy": { out: "tcp-proxy", sources: ["tcp-proxy.c"], headers: [], flags: CFLAGS },
};

export class BuildError extends Error {
  override name = "BuildError";
}

function stampOf(t: Target): string {
  const h = createHash("sha256");
  h.update(t.flags.join(" "));
  for (const f of [...t.sources, ...t.headers]) h.update(f).update(readFileSync(join(C_DIR, f)));
  return h.digest("hex");
}

/** Returns the path of the built target, building it first if it is missing or stale. */
export function buildC(name: keyof typeof TARGETS): string {
  const t = TARGETS[name];
  const out = join(BUILD_DIR, t.out);
  const stampPath = `${out}.stamp`;
  const stamp = stampOf(t);
  if (existsSync(out) && existsSync(stampPath) && readFileSync(stampPath, "utf8") === stamp) return out;
  mkdirSync(BUILD_DIR, { recursive: true });
  const tmp = `${out}.tmp-${process.pid}`;
  const cmd = ["gcc", ...t.flags, "-o", tmp, ...t.sources.map((s) => join(C_DIR, s))];
  let r;
  try {
    r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  } catch (e) {
    throw new BuildError(`cannot run gcc to build the C references (${(e as Error).message}); install it: apt-get install -y gcc`);
  }
  if (r.exitCode !== 0) {
    rmSync(tmp, { force: true });
    throw new BuildError(`gcc failed building ${t.out}:\n${cmd.join(" ")}\n${r.stderr.toString()}`);
  }
  renameSync(tmp, out);
  writeFileSync(stampPath, stamp);
  return out;
}
