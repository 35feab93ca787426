// The per-user runtime directory: app sockets and the state file `mesh status` reads live here.
// It must be private (0700, owned by us): anyone who can open an app socket can talk to the sidecar
// as that app, and a directory someone else pre-created in /tmp could be used to hijack it.
import { chmodSync, lstatSync, mkdirSync } from "node:fs";
import { join } from "node:path";

export class RuntimeDirError extends Error {
  override name = "RuntimeDirError";
}

/** $XDG_RUNTIME_DIR/rpal-mesh when set (systemd gives every user one), else /tmp/rpal-mesh-<uid>. */
export function runtimeRoot(env: Record<string, string | undefined> = process.env): string {
  if (env.MESH_RUNTIME_DIR) return env.MESH_RUNTIME_DIR;
  const xdg = env.XDG_RUNTIME_DIR;
  if (xdg) return join(xdg, "rpal-mesh");
  return `/tmp/rpal-mesh-${process.getuid?.() ?? "user"}`;
}

/** Creates `dir` (and parents) if needed and checks it is a real directory we own with mode 0700. */
export function ensurePrivateDir(dir: string): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  if (!st.isDirectory()) {
    throw new RuntimeDirError(`${dir} is not a directory (a symlink or file is in the way) — remove it or set MESH_RUNTIME_DIR`);
  }
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new RuntimeDirError(
      `${dir} belongs to uid ${st.uid}, not to you (uid ${uid}) — someone else created it; remove it or set MESH_RUNTIME_DIR to a private directory`,
    );
  }
  // mkdir's mode is filtered by the umask and an existing directory keeps its mode: force 0700.
  if ((st.mode & 0o777) !== 0o700) chmodSync(dir, 0o700);
  return dir;
}

/** Where one `mesh up` keeps its sockets and state; removed when it stops. */
export function runDir(root: string, runId: string): string {
  return join(root, "runs", runId);
}

/** Unix socket paths are limited to 107 bytes on Linux; fail early with the fix, not at bind time. */
export const MAX_SOCKET_PATH = 107;
