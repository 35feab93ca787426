// Compiles a C file of ours into a shared library on first use, cached in the user's cache directory
// under a name keyed by the source's hash, so an edited source is rebuilt and an unchanged one is not.
// gcc is needed once per source version; its absence is reported with the fix.
import { existsSync, readFileSync, renameSync, unlinkSync } from "node:fs";
import { basename, join } from "node:path";
import { cacheDir, cacheDirPath } from "./cache.ts";

const CFLAGS = ["-O2", "-shared", "-fPIC", "-fvisibility=hidden", "-Wall"];

/** Where compileShared puts (or has put) the library for this exact source. Creates nothing. */
export function compiledPath(source: string, libs: string[] = [], dir = cacheDirPath("native")): string {
  const hasher = new Bun.CryptoHasher("sha256");
  hasher.update(readFileSync(source));
  hasher.update(CFLAGS.join(" ") + libs.join(" "));
  return join(dir, `${basename(source, ".c")}-${hasher.digest("hex").slice(0, 16)}.so`);
}

export function compileShared(source: string, libs: string[] = []): string {
  const out = compiledPath(source, libs, cacheDir("native"));
  if (existsSync(out)) return out;
  const tmp = `${out}.${process.pid}.tmp`;
  let proc: ReturnType<typeof Bun.spawnSync>;
  try {
    proc = Bun.spawnSync(["gcc", ...CFLAGS, "-o", tmp, source, ...libs], { stdout: "pipe", stderr: "pipe" });
  } catch (e) {
    throw new Error(
      `cannot run gcc to build ${basename(source)} (${(e as Error).message}): the rpal transport compiles its native ` +
        `part on first use; install gcc (e.g. apt-get install gcc)`,
    );
  }
  if (proc.exitCode !== 0) {
    try {
      unlinkSync(tmp);
    } catch {
      // gcc wrote nothing
    }
    throw new Error(`gcc failed to build ${source} (exit ${proc.exitCode}):\n${proc.stderr?.toString() ?? ""}`);
  }
  renameSync(tmp, out);
  return out;
}
