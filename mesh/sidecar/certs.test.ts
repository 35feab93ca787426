// `mesh certs`: files, permissions, a chain that verifies, reuse of the CA, and usage errors.
import { afterEach, describe, expect, test } from "bun:test";
import { X509Certificate } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { certsMain, issueCertificates } from "./certs.ts";
import { TestResources } from "../../test/helpers.ts";

const res = new TestResources();
afterEach(() => res.cleanup());

describe("mesh certs", () => {
  test("makes a CA and pod certificates that verify against it, keys owner-only", async () => {
    const dir = join(res.scratchDir("certs-"), "certs");
    const out = await issueCertificates({ dir, pods: ["greeter", "frontend"], days: 30, sans: ["10.1.2.3", "greeter.default.svc"], newCa: false });
    expect(out.caCreated).toBe(true);
    const ca = new X509Certificate(readFileSync(out.ca));
    for (const p of out.pods) {
      const cert = new X509Certificate(readFileSync(p.cert));
      expect(cert.verify(ca.publicKey)).toBe(true);
      expect(cert.checkIssued(ca)).toBe(true);
      expect(cert.subjectAltName).toContain(`DNS:${p.pod}`);
      expect(cert.subjectAltName).toContain("IP Address:127.0.0.1");
      expect(cert.subjectAltName).toContain("IP Address:10.1.2.3");
      expect(cert.subjectAltName).toContain("DNS:greeter.default.svc");
      expect(statSync(p.key).mode & 0o777).toBe(0o600);
    }
    expect(ca.ca).toBe(true);
    expect(statSync(out.caKey).mode & 0o777).toBe(0o600);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    // A second run reuses the CA: certificates issued now verify against the same CA file.
    const again = await issueCertificates({ dir, pods: ["greeter"], days: 30, sans: [], newCa: false });
    expect(again.caCreated).toBe(false);
    expect(new X509Certificate(readFileSync(again.pods[0]!.cert)).verify(ca.publicKey)).toBe(true);
  });

  test("usage errors exit 2 with a message naming the problem", async () => {
    const errors: string[] = [];
    const write = process.stderr.write;
    process.stderr.write = ((s: string) => (errors.push(String(s)), true)) as typeof process.stderr.write;
    try {
      expect(await certsMain([])).toBe(2);
      expect(await certsMain(["Bad_Name"])).toBe(2);
      expect(await certsMain(["--days", "zero", "a"])).toBe(2);
      expect(await certsMain(["--bogus", "a"])).toBe(2);
      expect(await certsMain(["--san", "not a name", "a"])).toBe(2);
    } finally {
      process.stderr.write = write;
    }
    expect(errors.join("")).toContain("name at least one pod");
    expect(errors.join("")).toContain('pod name "Bad_Name"');
    expect(errors.join("")).toContain("--days must be");
    expect(errors.join("")).toContain("unknown option --bogus");
    expect(errors.join("")).toContain("neither an IP address nor a DNS name");
  });
});
