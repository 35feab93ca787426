// The per-user cache directory where rpal-mesh keeps what it builds on first use (the marked bun copy,
// the compiled receiver shim, the test double). We later execute and dlopen files from it, so it must
// be ours alone: created 0700, and refused if another user owns it or others may write to it.
import { chmodSync, existsSync, mkdirSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

/** Where the cache directory is, without creating it. */
export function cacheDirPath(sub?: string): string {
  const base = process.env.MESH_CACHE_DIR || join(process.env.XDG_CACHE_HOME || join(homedir(), ".cache"), "rpal-mesh");
  return sub ? join(base, sub) : base;
}

/** $MESH_CACHE_DIR, else $XDG_CACHE_HOME/rpal-mesh, else ~/.cache/rpal-mesh. Created 0700 if missing. */
export function cacheDir(sub?: string): string {
  const base = cacheDirPath();
  const dir = cacheDirPath(sub);
  ensurePrivateDir(base);
  if (sub) ensurePrivateDir(dir);
  return dir;
}

function ensurePrivateDir(dir: string): void {
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = statSync(dir);
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new Error(
      `cache directory ${dir} belongs to uid ${st.uid}, not to you (uid ${uid}): rpal-mesh would run code from it; ` +
        `remove it or set MESH_CACHE_DIR to a directory of your own`,
    );
  }
  if ((st.mode & 0o077) !== 0) chmodSync(dir, 0o700);
}
