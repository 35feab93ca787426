// mTLS credentials for the inbound server and the upstream clients, built on grpc-js's file-watching
// certificate provider: it re-reads the files every refresh interval and grpc-js rebuilds the secure
// context, so certificates rotated by `mesh certs` take effect without a restart.
import * as grpc from "@grpc/grpc-js";
import { X509Certificate } from "node:crypto";
import { accessSync, constants, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { isIP } from "node:net";

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
      if (field !== "key") new X509Certificate(text);
    } catch (e) {
      throw new Error(
        `sidecar.tls.${field}: cannot use ${path}: ${(e as Error).message} — run \`bun run mesh certs <pod>\` to make the CA and certificates`,
      );
    }
  }
  return out;
}

export class MeshTls {
  private readonly provider: grpc.experimental.FileWatcherCertificateProvider;

  constructor(readonly files: TlsFiles) {
    this.provider = new grpc.experimental.FileWatcherCertificateProvider({
      certificateFile: files.cert,
      privateKeyFile: files.key,
      caCertificateFile: files.ca,
      refreshIntervalMs: certRefreshMs(),
    });
  }

  /** Inbound: a client must present a certificate signed by the mesh CA. */
  serverCredentials(): grpc.ServerCredentials {
    return grpc.experimental.createCertificateProviderServerCredentials(this.provider, this.provider, true);
  }

  /** Upstream: present our certificate; accept a server certificate signed by the mesh CA. */
  channelCredentials(): grpc.ChannelCredentials {
    return grpc.experimental.createCertificateProviderChannelCredentials(this.provider, this.provider);
  }

  /**
   * Channel options for an endpoint. Bun's TLS refuses an IP address as SNI server name, so for IP
   * endpoints we send "localhost" as SNI: the server certificate is still verified against the mesh CA
   * (every pod certificate `mesh certs` makes carries localhost and 127.0.0.1), which is the identity
   * that matters inside the mesh.
   */
  channelOptions(address: string): grpc.ChannelOptions {
    const host = address.slice(0, address.lastIndexOf(":")).replace(/^\[|\]$/g, "");
    return isIP(host) ? { "grpc.ssl_target_name_override": "localhost" } : {};
  }
}
