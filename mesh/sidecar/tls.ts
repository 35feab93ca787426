// mTLS material for the inbound server and the upstream clients. The files are re-read every refresh
// interval; a set that changed and is consistent (the key matches the certificate, the certificate is
// signed by the CA) replaces the current one, and the inbound server takes it with setSecureContext —
// so certificates rotated by `mesh certs` take effect without a restart. New upstream connections use
// the current set; established connections keep theirs. A half-written set (a refresh that lands
// between `mesh certs`' file writes) is skipped until the next refresh sees it whole.
import type * as NodeCrypto from "node:crypto";
import { accessSync, constants, readFileSync } from "node:fs";
import { resolve } from "node:path";
import type * as NodeTls from "node:tls";
import type { SecureContextOptions } from "node:tls";
import { logger } from "../../runtime/log.ts";

// node:crypto and node:tls are loaded on first use, i.e. only by a sidecar with mTLS: loading them costs
// a sidecar without TLS ~1 MB of resident memory (with node:zlib and node:dns/promises, also loaded
// on first use: grpc/wire.ts, discovery/dns.ts).
const X509Certificate = (): typeof NodeCrypto.X509Certificate => (require("node:crypto") as typeof NodeCrypto).X509Certificate;
const createSecureContext = (o: SecureContextOptions): NodeTls.SecureContext => (require("node:tls") as typeof NodeTls).createSecureContext(o);

export interface TlsFiles {
  ca: string;
  cert: string;
  key: string;
}

/** How often the certificate files are re-read (MESH_CERT_REFRESH_MS overrides; tests use a short one). */
export function certRefreshMs(): number {
  const v = Number(process.env.MESH_CERT_REFRESH_MS);
  return Number.isInteger(v) && v >= 50 ? v : 5000;
}

/** Resolves the paths (relative to mesh.yaml's directory) and checks each file is readable PEM now, with a fix. */
export function checkTlsFiles(tls: TlsFiles, baseDir: string): TlsFiles {
  const out: TlsFiles = { ca: resolve(baseDir, tls.ca), cert: resolve(baseDir, tls.cert), key: resolve(baseDir, tls.key) };
  for (const [field, path] of Object.entries(out)) {
    try {
      accessSync(path, constants.R_OK);
      const text = readFileSync(path, "utf8");
      if (!text.includes("-----BEGIN ")) throw new Error("not a PEM file");
      if (field !== "key") new (X509Certificate())(text);
    } catch (e) {
      throw new Error(
        `sidecar.tls.${field}: cannot use ${path}: ${(e as Error).message} — run \`bun run mesh certs <pod>\` to make the CA and certificates`,
      );
    }
  }
  return out;
}

interface Material {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

function readMaterial(files: TlsFiles): Material {
  return { ca: readFileSync(files.ca), cert: readFileSync(files.cert), key: readFileSync(files.key) };
}

/** Throws unless key and certificate match and the certificate is signed by the CA. */
function checkConsistent(m: Material): void {
  createSecureContext({ ca: m.ca, cert: m.cert, key: m.key }); // throws on a key that does not match
  const X509 = X509Certificate();
  const cert = new X509(m.cert);
  const ca = new X509(m.ca);
  if (!cert.verify(ca.publicKey)) throw new Error("the certificate is not signed by the CA");
}

export class MeshTls {
  private material: Material;
  private readonly listeners: ((ctx: SecureContextOptions) => void)[] = [];
  private readonly timer: ReturnType<typeof setInterval>;

  constructor(readonly files: TlsFiles) {
    this.material = readMaterial(files);
    this.timer = setInterval(() => this.refresh(), certRefreshMs());
    this.timer.unref?.();
  }

  /** The current CA, certificate and key. */
  context(): SecureContextOptions {
    const m = this.material;
    return { ca: m.ca, cert: m.cert, key: m.key };
  }

  /** Calls `f` with the new material after each rotation. */
  onChange(f: (ctx: SecureContextOptions) => void): void {
    this.listeners.push(f);
  }

  /** Re-reads the files; applies them if they changed and are consistent. Returns true if applied. */
  refresh(): boolean {
    let next: Material;
    try {
      next = readMaterial(this.files);
    } catch {
      return false; // mid-rotation (a file briefly missing): try again next time
    }
    const cur = this.material;
    if (next.ca.equals(cur.ca) && next.cert.equals(cur.cert) && next.key.equals(cur.key)) return false;
    try {
      checkConsistent(next);
    } catch {
      return false;
    }
    this.material = next;
    logger("sidecar").info({ cert: this.files.cert }, "TLS certificates changed on disk: using the new ones");
    for (const f of this.listeners) {
      try {
        f(this.context());
      } catch (e) {
        logger("sidecar").warn({ err: (e as Error).message }, "applying rotated certificates failed");
      }
    }
    return true;
  }

  close(): void {
    clearInterval(this.timer);
  }
}
