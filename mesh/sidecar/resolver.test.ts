// Which resolver an upstream gets, and that `dns:` really resolves (A and SRV) against a DNS server on
// loopback and follows changes. DNS discovery's own edge cases are tested in discovery/.
import { afterEach, describe, expect, test } from "bun:test";
import { makeResolver, type Resolver, StaticResolver } from "./resolver.ts";
import { startDns, type Zone } from "./testdata/dns-server.ts";
import { waitFor } from "../../test/helpers.ts";

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

async function withServers<T>(port: number, f: () => T): Promise<T> {
  const saved = process.env.MESH_DNS_SERVERS;
  process.env.MESH_DNS_SERVERS = `127.0.0.1:${port}`;
  try {
    return f();
  } finally {
    if (saved === undefined) delete process.env.MESH_DNS_SERVERS;
    else process.env.MESH_DNS_SERVERS = saved;
  }
}

describe("resolver", () => {
  test("static endpoints are reported as given", () => {
    let got: string[] = [];
    const r = makeResolver({ endpoints: ["127.0.0.1:1", "127.0.0.1:2"] });
    expect(r).toBeInstanceOf(StaticResolver);
    r.start((a) => (got = a));
    expect(got).toEqual(["127.0.0.1:1", "127.0.0.1:2"]);
  });

  test("dns: A records, every address with the target's port, followed when they change", async () => {
    const zone: Zone = { a: { "greeter.test": ["10.0.0.2", "10.0.0.1"] }, srv: {}, ttl: 1 };
    const dns = await startDns(zone);
    cleanups.push(() => dns.close());
    const r: Resolver = await withServers(dns.port, () => makeResolver({ dns: "greeter.test:50051" }));
    cleanups.push(() => r.close());
    const updates: string[][] = [];
    r.start((a) => updates.push(a));
    await waitFor(() => updates.length >= 1, { what: "first DNS answer" });
    expect(updates[0]).toEqual(["10.0.0.1:50051", "10.0.0.2:50051"]);
    zone.a["greeter.test"] = ["10.0.0.3"];
    await waitFor(() => updates.length >= 2, { what: "re-resolution after the TTL", timeoutMs: 8000 });
    expect(updates[1]).toEqual(["10.0.0.3:50051"]);
  }, 15_000);

  test("dns: SRV records give targets and ports", async () => {
    const zone: Zone = {
      a: { "pod-a.test": ["10.0.1.1"], "pod-b.test": ["10.0.1.2"] },
      srv: { "_grpc._tcp.greeter.test": [{ target: "pod-a.test", port: 7001 }, { target: "pod-b.test", port: 7002 }] },
      ttl: 30,
    };
    const dns = await startDns(zone);
    cleanups.push(() => dns.close());
    const r: Resolver = await withServers(dns.port, () => makeResolver({ dns: "_grpc._tcp.greeter.test:1" }));
    cleanups.push(() => r.close());
    let got: string[] = [];
    r.start((a) => (got = a));
    await waitFor(() => got.length === 2, { what: "SRV answer" });
    expect(got).toEqual(["10.0.1.1:7001", "10.0.1.2:7002"]);
  });
});
