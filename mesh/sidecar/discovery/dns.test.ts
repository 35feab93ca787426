// DnsDiscovery against a real DNS server on loopback UDP (dns-packet encodes the answers), so the
// TTL, NXDOMAIN, SERVFAIL and silence cases are the ones c-ares really sees.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { waitFor } from "../../../test/helpers.ts";
import { DnsDiscovery, formatEndpoint } from "./dns.ts";
import { DnsConfigError, parseDnsServers, parseDnsTarget } from "./target.ts";
import { TestDnsServer } from "./test-dns-server.ts";

const NAME = "greeter-headless.default.svc.cluster.local";
const eps = (d: DnsDiscovery) => d.endpoints.map(formatEndpoint);

describe("DnsDiscovery", () => {
  let dns: TestDnsServer;
  const open: DnsDiscovery[] = [];
  const make = (target: string, opts: ConstructorParameters<typeof DnsDiscovery>[1] = {}) => {
    const d = new DnsDiscovery(target, { servers: [dns.server], minRefreshMs: 50, retryMs: 50, maxRefreshMs: 2000, queryTimeoutMs: 200, ...opts });
    open.push(d);
    return d;
  };

  beforeEach(async () => {
    dns = new TestDnsServer();
    await dns.start();
  });
  afterEach(() => {
    for (const d of open.splice(0)) d.close();
    dns.close();
  });

  test("A records of a headless Service become sorted endpoints with the configured port", async () => {
    dns.a.set(NAME, ["10.0.0.7", "10.0.0.3"]);
    const d = make(`${NAME}:50051`);
    await d.start();
    expect(eps(d)).toEqual(["10.0.0.3:50051", "10.0.0.7:50051"]);
    expect(d.error).toBeUndefined();
  });

  test("re-resolves when the TTL runs out and reports the change once", async () => {
    dns.a.set(NAME, ["10.0.0.1"]);
    dns.ttl = 0; // clamped to minRefreshMs, so the refresh comes quickly
    const d = make(`${NAME}:50051`);
    const seen: string[][] = [];
    d.subscribe((e) => seen.push(e.map(formatEndpoint)));
    await d.start();
    expect(seen).toEqual([["10.0.0.1:50051"]]);
    dns.a.set(NAME, ["10.0.0.1", "10.0.0.2"]);
    await waitFor(() => eps(d).length === 2, { what: "the second pod to appear" });
    expect(eps(d)).toEqual(["10.0.0.1:50051", "10.0.0.2:50051"]);
    const queriesBefore = dns.queries.length;
    await waitFor(() => dns.queries.length >= queriesBefore + 4, { what: "further refreshes" });
    // Same answer again: listeners are not called for a set that did not change.
    expect(seen).toEqual([["10.0.0.1:50051"], ["10.0.0.1:50051", "10.0.0.2:50051"]]);
  });

  test("the TTL, not a fixed period, paces the refreshes", async () => {
    dns.a.set(NAME, ["10.0.0.1"]);
    dns.ttl = 3600;
    const d = make(`${NAME}:50051`, { minRefreshMs: 10, maxRefreshMs: 60_000 });
    await d.start();
    const after = dns.queries.length;
    // A refresh would be due within 10 ms if the TTL were ignored; prove none happens while a far
    // shorter-TTL discovery refreshes several times against the same server.
    dns.a.set("other.default.svc.cluster.local", ["10.0.0.9"]);
    dns.ttl = 0;
    const other = make("other.default.svc.cluster.local:1", { minRefreshMs: 10 });
    await other.start();
    await waitFor(() => dns.queries.filter((q) => q.name.startsWith("other")).length >= 8, { what: "the short-TTL name to refresh" });
    expect(dns.queries.filter((q) => q.name === NAME).length).toBe(after);
  });

  test("NXDOMAIN empties the set (no ready pods) and the endpoints come back with the name", async () => {
    dns.a.set(NAME, ["10.0.0.1"]);
    dns.ttl = 0;
    const d = make(`${NAME}:50051`);
    await d.start();
    expect(eps(d)).toEqual(["10.0.0.1:50051"]);
    dns.a.delete(NAME);
    await waitFor(() => eps(d).length === 0, { what: "the endpoints to be withdrawn" });
    expect(d.error).toContain("no A/AAAA records");
    dns.a.set(NAME, ["10.0.0.5"]);
    await waitFor(() => eps(d).length === 1, { what: "the endpoint to return" });
    expect(eps(d)).toEqual(["10.0.0.5:50051"]);
  });

  test("SERVFAIL and a silent server keep the last good endpoints", async () => {
    dns.a.set(NAME, ["10.0.0.1", "10.0.0.2"]);
    dns.ttl = 0;
    const d = make(`${NAME}:50051`, { maxRefreshMs: 200, queryTimeoutMs: 100 });
    await d.start();
    dns.mode = "servfail";
    await waitFor(() => d.error !== undefined, { what: "a failed refresh" });
    expect(d.error).toContain("failed");
    expect(eps(d)).toEqual(["10.0.0.1:50051", "10.0.0.2:50051"]);
    dns.mode = "silent";
    const n = dns.queries.length;
    await waitFor(() => dns.queries.length > n + 2, { what: "retries against a silent server" });
    expect(eps(d)).toEqual(["10.0.0.1:50051", "10.0.0.2:50051"]);
    dns.mode = "answer";
    await waitFor(() => d.error === undefined, { what: "recovery" });
  }, 15_000);

  test("AAAA records are used too (IPv6 clusters)", async () => {
    dns.aaaa.set(NAME, ["fd00::7"]);
    const d = make(`${NAME}:50051`);
    await d.start();
    expect(eps(d)).toEqual(["[fd00::7]:50051"]);
  });

  test("SRV: the lowest-priority records' targets and ports", async () => {
    const srvName = `_grpc._tcp.${NAME}`;
    dns.srv.set(srvName, [
      { target: `10-0-0-1.${NAME}`, port: 50051 },
      { target: `10-0-0-2.${NAME}`, port: 50052 },
      { target: `backup.${NAME}`, port: 50053, priority: 10 },
    ]);
    dns.a.set(`10-0-0-1.${NAME}`, ["10.0.0.1"]);
    dns.a.set(`10-0-0-2.${NAME}`, ["10.0.0.2"]);
    dns.a.set(`backup.${NAME}`, ["10.0.0.99"]);
    const d = make(`${srvName}:1`);
    await d.start();
    expect(eps(d)).toEqual(["10.0.0.1:50051", "10.0.0.2:50052"]);
  });

  test("a hostile answer with thousands of records is capped", async () => {
    const many = Array.from({ length: 300 }, (_, i) => `10.1.${i >> 8}.${i & 255}`);
    dns.a.set(NAME, many);
    const d = make(`${NAME}:50051`, { maxEndpoints: 16 });
    await d.start();
    expect(d.endpoints.length).toBe(16);
  });

  test("an IP literal needs no DNS", async () => {
    const d = make("10.9.9.9:7000");
    await d.start();
    expect(eps(d)).toEqual(["10.9.9.9:7000"]);
    expect(dns.queries.length).toBe(0);
  });

  test("close() stops refreshing", async () => {
    dns.a.set(NAME, ["10.0.0.1"]);
    dns.ttl = 0;
    const d = make(`${NAME}:50051`);
    await d.start();
    d.close();
    const n = dns.queries.length;
    // The other discovery's refreshes are the clock: after several of them, the closed one sent nothing.
    dns.a.set("clock.default.svc.cluster.local", ["10.0.0.2"]);
    const clock = make("clock.default.svc.cluster.local:1");
    await clock.start();
    await waitFor(() => dns.queries.filter((q) => q.name.startsWith("clock")).length >= 6, { what: "clock refreshes" });
    expect(dns.queries.filter((q) => q.name === NAME).length).toBe(n);
  });
});

describe("dns target and server parsing", () => {
  test("kinds", () => {
    expect(parseDnsTarget("greeter.default.svc.cluster.local:50051")).toEqual({ kind: "a", name: "greeter.default.svc.cluster.local", port: 50051 });
    expect(parseDnsTarget("_grpc._tcp.greeter-headless.default.svc.cluster.local:50051")).toEqual({
      kind: "srv",
      name: "_grpc._tcp.greeter-headless.default.svc.cluster.local",
      fallbackPort: 50051,
    });
    expect(parseDnsTarget("[fd00::1]:80")).toEqual({ kind: "ip", host: "fd00::1", port: 80 });
  });

  test.each([
    ["greeter.default.svc", "no port"],
    ["greeter:0", "out of range"],
    ["greeter:99999", "out of range"],
    ["bad..name:80", "not a DNS name"],
    ["-bad.name:80", "not a DNS name"],
    ["_grpc.greeter:80", "not an SRV name"],
    ["fd00::1:80", "brackets"],
    [`${"a".repeat(64)}.svc:80`, "not a DNS name"],
  ])("rejects %p (%s)", (value, why) => {
    expect(() => parseDnsTarget(value)).toThrow(DnsConfigError);
    expect(() => parseDnsTarget(value)).toThrow(why);
  });

  test("servers", () => {
    expect(parseDnsServers("10.96.0.10, 127.0.0.1:5353 [fd00::a]:53")).toEqual(["10.96.0.10", "127.0.0.1:5353", "[fd00::a]:53"]);
    expect(() => parseDnsServers("kube-dns:53")).toThrow("not an IP address");
    expect(() => parseDnsServers("")).toThrow("no DNS server");
    expect(() => parseDnsServers("10.0.0.1:70000")).toThrow("out of range");
  });

  test("MESH_DNS_SERVERS is read when no servers are given, and a bad value is a clear error", () => {
    const saved = process.env.MESH_DNS_SERVERS;
    try {
      process.env.MESH_DNS_SERVERS = "not-an-ip";
      expect(() => new DnsDiscovery("greeter.default.svc.cluster.local:1")).toThrow("MESH_DNS_SERVERS");
    } finally {
      if (saved === undefined) delete process.env.MESH_DNS_SERVERS;
      else process.env.MESH_DNS_SERVERS = saved;
    }
  });
});

