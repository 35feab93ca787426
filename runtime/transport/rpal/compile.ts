// Compiles a C file of ours into a shared library on first use, cached in the user's cache directory
// under a name keyed by the source's hash, so an edited source is rebuilt and an unchanged one is not.
// gcc is needed once per source version; its absence is reported with the fix.
import { existsSync, readFileSync, renameSync, unlinkSync } from "node:fs";
import { basename, join } from "node:path";
import { cacheDir } from "./cache.ts";

const CFLAGS = ["-O2", "-shared", "-fPIC", "-fvisibility=hidden", "-Wall"];

export function compileShared(source: string, libs: string[] = []): string {
  const text = readFileSync(source);
  const hasher = new Bun.CryptoHasher("sha256");
  hasher.update(text);
  hasher.update(CFLAGS.join(" ") + libs.join(" "));
  const hash = hasher.digest("hex").slice(0, 16);
  const out = join(cacheDir("native"), `${basename(source, ".c")}-${hash}.so`);
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
