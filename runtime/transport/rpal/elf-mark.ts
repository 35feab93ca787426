// The RPAL kernel lets a process use RPAL only if its executable carries "RPAL" at offset 12 of the ELF
// header (the unused tail of e_ident). We never touch the user's bun: `mesh up --transport rpal` runs a
// marked copy kept in the user's cache directory and rebuilt whenever bun changes.
import { chmodSync, closeSync, existsSync, openSync, readFileSync, readSync, realpathSync, renameSync, statSync, unlinkSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { cacheDir } from "./cache.ts";

export const RPAL_MARK_OFFSET = 12;
export const RPAL_MARK = Buffer.from("RPAL");
const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);

function readIdent(path: string): Buffer {
  const fd = openSync(path, "r");
  try {
    const b = Buffer.alloc(16);
    const n = readSync(fd, b, 0, 16, 0);
    if (n < 16) throw new Error(`${path} is shorter than an ELF header (${n} bytes)`);
    return b;
  } finally {
    closeSync(fd);
  }
}

/** True if `path` is an ELF file with "RPAL" at offset 12. Throws if it is not ELF at all. */
export function carriesRpalMark(path: string): boolean {
  const ident = readIdent(path);
  if (!ident.subarray(0, 4).equals(ELF_MAGIC)) throw new Error(`${path} is not an ELF executable`);
  return ident.subarray(RPAL_MARK_OFFSET, RPAL_MARK_OFFSET + 4).equals(RPAL_MARK);
}

interface Manifest {
  source: string;
  size: number;
  mtimeMs: number;
  sha256: string;
  copy: string;
}

function sha256File(path: string): string {
  const hasher = new Bun.CryptoHasher("sha256");
  hasher.update(readFileSync(path));
  return hasher.digest("hex");
}

export interface MarkedBun {
  /** The marked executable to launch app and sidecar with. */
  path: string;
  /** True if this call (re)built it. */
  built: boolean;
  source: string;
}

/**
 * Returns a marked copy of `source` (default: the running bun), building it if missing or stale.
 * Stale = the source's size or mtime changed and its sha256 differs from the one the copy was made from.
 * Safe against a concurrent build by another process (write to a temp name, then rename).
 */
export function markedBun(source: string = process.execPath): MarkedBun {
  const real = realpathSync(source);
  const dir = cacheDir("bun-rpal");
  const manifestPath = join(dir, "manifest.json");
  const st = statSync(real);
  let manifest: Manifest | undefined;
  try {
    manifest = JSON.parse(readFileSync(manifestPath, "utf8")) as Manifest;
  } catch {
    manifest = undefined;
  }
  const copyUsable = (m: Manifest) => existsSync(m.copy) && statSync(m.copy).size === m.size && carriesRpalMark(m.copy);
  if (manifest && manifest.source === real && manifest.size === st.size && manifest.mtimeMs === st.mtimeMs && copyUsable(manifest)) {
    return { path: manifest.copy, built: false, source: real };
  }
  const sha = sha256File(real);
  if (manifest && manifest.sha256 === sha && manifest.size === st.size && copyUsable(manifest)) {
    // Same bytes, touched file: remember the new mtime so the next check is cheap again.
    writeManifest(manifestPath, { ...manifest, source: real, mtimeMs: st.mtimeMs });
    return { path: manifest.copy, built: false, source: real };
  }
  if (carriesRpalMark(real)) {
    // Already marked (e.g. a bun built for RPAL): nothing to copy.
    return { path: real, built: false, source: real };
  }
  const copy = join(dir, `bun-${sha.slice(0, 16)}`);
  const tmp = `${copy}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, readFileSync(real), { mode: 0o700 });
    const fd = openSync(tmp, "r+");
    try {
      writeSync(fd, RPAL_MARK, 0, 4, RPAL_MARK_OFFSET);
    } finally {
      closeSync(fd);
    }
    chmodSync(tmp, 0o700);
    renameSync(tmp, copy);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      // never created
    }
    throw new Error(`cannot build the RPAL-marked copy of ${real} in ${dir}: ${(e as Error).message}`, { cause: e });
  }
  if (manifest && manifest.copy !== copy && existsSync(manifest.copy)) {
    try {
      unlinkSync(manifest.copy); // the copy of an older bun
    } catch {
      // in use or gone: harmless
    }
  }
  writeManifest(manifestPath, { source: real, size: st.size, mtimeMs: st.mtimeMs, sha256: sha, copy });
  return { path: copy, built: true, source: real };
}

function writeManifest(path: string, m: Manifest): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(m), { mode: 0o600 });
  renameSync(tmp, path);
}
