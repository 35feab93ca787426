// `mesh certs`: a local CA and one certificate per pod, for mTLS between sidecars.
// Built on @peculiar/x509 (pure TypeScript over WebCrypto) rather than the openssl CLI so that the
// project installs everything it needs with `bun install`: no system binary, no version-dependent
// openssl flags. Keys are ECDSA P-256 (small, fast handshakes, accepted by every TLS stack).
// @peculiar/x509 resolves its algorithms through tsyringe, which needs the Reflect metadata polyfill
// loaded first.
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync, chmodSync } from "node:fs";
import { join, resolve } from "node:path";
import { isIP } from "node:net";

const ALG: EcKeyGenParams & EcdsaParams = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
const POD_NAME = /^[a-z0-9-]{1,63}$/;

x509.cryptoProvider.set(crypto);

export interface CertsOptions {
  dir: string;
  pods: string[];
  days: number;
  /** Extra subjectAltNames (DNS names or IP addresses) put on every pod certificate. */
  sans: string[];
  /** Make a new CA even if one exists (every pod certificate must then be reissued). */
  newCa: boolean;
}

export interface IssuedFiles {
  ca: string;
  caKey: string;
  pods: { pod: string; cert: string; key: string }[];
  caCreated: boolean;
}

function toPem(der: ArrayBuffer, label: string): string {
  const b64 = Buffer.from(der).toString("base64").replace(/.{64}/g, "$&\n").replace(/\n$/, "");
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

function fromPem(pem: string, label: string, file: string): ArrayBuffer {
  const m = new RegExp(`-----BEGIN ${label}-----([\\s\\S]*?)-----END ${label}-----`).exec(pem);
  if (!m?.[1]) throw new Error(`${file}: no "${label}" PEM block found (expected a file written by \`mesh certs\`)`);
  const buf = Buffer.from(m[1].replace(/\s+/g, ""), "base64");
  return buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) as ArrayBuffer;
}

/** Writes through a temporary file and a rename, so a process watching `path` never reads half a file. */
function writeAtomic(path: string, text: string, mode: number): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

async function exportKey(key: CryptoKey): Promise<string> {
  return toPem(await crypto.subtle.exportKey("pkcs8", key), "PRIVATE KEY");
}

interface Ca {
  cert: x509.X509Certificate;
  key: CryptoKey;
}

async function loadCa(certPath: string, keyPath: string): Promise<Ca> {
  const cert = new x509.X509Certificate(readFileSync(certPath, "utf8"));
  const key = await crypto.subtle.importKey(
    "pkcs8",
    fromPem(readFileSync(keyPath, "utf8"), "PRIVATE KEY", keyPath),
    ALG,
    true,
    ["sign"],
  );
  return { cert, key };
}

async function makeCa(days: number): Promise<Ca> {
  const keys = (await crypto.subtle.generateKey(ALG, true, ["sign", "verify"])) as CryptoKeyPair;
  const now = new Date();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: "CN=rpal-mesh local CA",
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + days * 86_400_000),
    keys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert, key: keys.privateKey };
}

async function issuePodCert(ca: Ca, pod: string, sans: string[], days: number): Promise<{ cert: string; key: string }> {
  const keys = (await crypto.subtle.generateKey(ALG, true, ["sign", "verify"])) as CryptoKeyPair;
  const names = [...new Set([pod, "localhost", "127.0.0.1", "::1", ...sans])].map((v) => ({
    type: (isIP(v) ? "ip" : "dns") as "ip" | "dns",
    value: v,
  }));
  const now = new Date();
  const cert = await x509.X509CertificateGenerator.create({
    subject: `CN=${pod}`,
    issuer: ca.cert.subject,
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + days * 86_400_000),
    publicKey: keys.publicKey,
    signingKey: ca.key,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      // Sidecars are both servers (inbound) and clients (upstreams) of each other.
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([...names, { type: "url", value: `spiffe://rpal-mesh/pod/${pod}` }]),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
    ],
  });
  return { cert: cert.toString("pem") + "\n", key: await exportKey(keys.privateKey) };
}

/**
 * Makes (or reuses) the CA in `dir` and issues a fresh certificate for every pod. Re-running it for a
 * pod is a rotation: the files are replaced atomically and running sidecars pick them up.
 */
export async function issueCertificates(opts: CertsOptions): Promise<IssuedFiles> {
  const dir = resolve(opts.dir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const caPath = join(dir, "ca.pem");
  const caKeyPath = join(dir, "ca-key.pem");
  let ca: Ca;
  let caCreated = false;
  if (!opts.newCa && existsSync(caPath) && existsSync(caKeyPath)) {
    ca = await loadCa(caPath, caKeyPath);
  } else {
    ca = await makeCa(Math.max(opts.days, 3650));
    writeAtomic(caKeyPath, await exportKey(ca.key), 0o600);
    writeAtomic(caPath, ca.cert.toString("pem") + "\n", 0o644);
    caCreated = true;
  }
  const pods: IssuedFiles["pods"] = [];
  for (const pod of opts.pods) {
    const issued = await issuePodCert(ca, pod, opts.sans, opts.days);
    const cert = join(dir, `${pod}.pem`);
    const key = join(dir, `${pod}-key.pem`);
    // Key first: a watcher that sees the new certificate must find its key already in place.
    writeAtomic(key, issued.key, 0o600);
    writeAtomic(cert, issued.cert, 0o644);
    pods.push({ pod, cert, key });
  }
  return { ca: caPath, caKey: caKeyPath, pods, caCreated };
}

const USAGE = `usage: mesh certs [--dir DIR] [--days N] [--san NAME]... [--new-ca] POD...

Makes a local CA (DIR/ca.pem, DIR/ca-key.pem) unless one exists, and for every POD a certificate
DIR/POD.pem and key DIR/POD-key.pem valid for POD, localhost, 127.0.0.1 and ::1 (plus --san names),
usable as server and client certificate. Running it again for a pod rotates that pod's certificate:
running sidecars pick the new files up without a restart.

  --dir DIR    where the files go (default: certs)
  --days N     validity of pod certificates in days (default: 365)
  --san NAME   an extra DNS name or IP address on every pod certificate (repeatable)
  --new-ca     make a new CA even if DIR/ca.pem exists
`;

/** Entry point of `mesh certs`. Returns the process exit code: 0 ok, 2 usage error, 1 failure. */
export async function certsMain(argv: string[]): Promise<number> {
  const opts: CertsOptions = { dir: "certs", pods: [], days: 365, sans: [], newCa: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string | undefined => {
      const v = argv[++i];
      if (v === undefined || v.startsWith("--")) {
        process.stderr.write(`mesh certs: ${a} needs a value\n\n${USAGE}`);
        return undefined;
      }
      return v;
    };
    if (a === "-h" || a === "--help") {
      process.stdout.write(USAGE);
      return 0;
    } else if (a === "--dir") {
      const v = value();
      if (v === undefined) return 2;
      opts.dir = v;
    } else if (a === "--days") {
      const v = value();
      if (v === undefined) return 2;
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > 36500) {
        process.stderr.write(`mesh certs: --days must be a whole number of days between 1 and 36500, got "${v}"\n`);
        return 2;
      }
      opts.days = n;
    } else if (a === "--san") {
      const v = value();
      if (v === undefined) return 2;
      if (!isIP(v) && !/^(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$/.test(v)) {
        process.stderr.write(`mesh certs: --san "${v}" is neither an IP address nor a DNS name\n`);
        return 2;
      }
      opts.sans.push(v);
    } else if (a === "--new-ca") {
      opts.newCa = true;
    } else if (a.startsWith("-")) {
      process.stderr.write(`mesh certs: unknown option ${a}\n\n${USAGE}`);
      return 2;
    } else if (!POD_NAME.test(a)) {
      process.stderr.write(`mesh certs: pod name "${a}" must be 1-63 characters of a-z, 0-9 and "-" (as in mesh.yaml)\n`);
      return 2;
    } else {
      opts.pods.push(a);
    }
  }
  if (opts.pods.length === 0) {
    process.stderr.write(`mesh certs: name at least one pod\n\n${USAGE}`);
    return 2;
  }
  try {
    const out = await issueCertificates(opts);
    process.stdout.write(`${out.caCreated ? "created" : "reused"} CA ${out.ca}\n`);
    for (const p of out.pods) process.stdout.write(`issued ${p.pod}: ${p.cert} ${p.key}\n`);
    return 0;
  } catch (e) {
    process.stderr.write(`mesh certs: ${(e as Error).message}\n`);
    return 1;
  }
}

if (import.meta.main) process.exit(await certsMain(process.argv.slice(2)));
