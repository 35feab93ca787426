// The DNS resolver against a real DNS server on loopback (dns-packet over UDP): A and SRV answers,
// re-resolution after the TTL, and a failing server keeping the last known list.
import { afterEach, describe, expect, test } from "bun:test";
import dnsPacket from "dns-packet";
import { createSocket, type Socket } from "node:dgram";
import { DnsResolver, StaticResolver } from "./resolver.ts";
import { waitFor } from "../../test/helpers.ts";

interface Zone {
  a: Record<string, string[]>;
  srv: Record<string, { target: string; port: number }[]>;
  ttl: number;
}

async function startDns(zone: Zone): Promise<{ server: Socket; port: number; queries: () => number }> {
  const server = createSocket("udp4");
  let queries = 0;
  server.on("message", (msg, rinfo) => {
    queries++;
    const q = dnsPacket.decode(msg);
    const question = q.questions?.[0];
    const answers: dnsPacket.Answer[] = [];
    if (question?.type === "A") {
      for (const ip of zone.a[question.name] ?? []) answers.push({ type: "A", name: question.name, ttl: zone.ttl, data: ip });
    } else if (question?.type === "SRV") {
      for (const s of zone.srv[question.name] ?? []) {
        answers.push({ type: "SRV", name: question.name, ttl: zone.ttl, data: { priority: 0, weight: 1, port: s.port, target: s.target } });
      }
    }
    const reply = dnsPacket.encode({
      id: q.id,
      type: "response",
      flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | (answers.length ? 0 : 3), // rcode 3 = NXDOMAIN
      questions: q.questions ?? [],
      answers,
    });
    server.send(reply, rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => server.bind(0, "127.0.0.1", () => r()));
  return { server, port: server.address().port, queries: () => queries };
}

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

describe("resolver", () => {
  test("static endpoints are reported as given", () => {
    let got: string[] = [];
    new StaticResolver(["127.0.0.1:1", "127.0.0.1:2"]).start((a) => (got = a));
    expect(got).toEqual(["127.0.0.1:1", "127.0.0.1:2"]);
  });

  test("A records: every address with the target's port, re-resolved after the TTL", async () => {
    const zone: Zone = { a: { "greeter.test": ["10.0.0.2", "10.0.0.1"] }, srv: {}, ttl: 1 };
    const dns = await startDns(zone);
    cleanups.push(() => dns.server.close());
    const r = new DnsResolver("greeter.test:50051", { servers: [`127.0.0.1:${dns.port}`], minRefreshMs: 50 });
    cleanups.push(() => r.close());
    const updates: string[][] = [];
    r.start((a) => updates.push(a));
    await waitFor(() => updates.length >= 1, { what: "first DNS answer" });
    expect(updates[0]).toEqual(["10.0.0.1:50051", "10.0.0.2:50051"]);
    zone.a["greeter.test"] = ["10.0.0.3"];
    await waitFor(() => updates.length >= 2, { what: "re-resolution after the TTL", timeoutMs: 5000 });
    expect(updates[1]).toEqual(["10.0.0.3:50051"]);
  });

  test("SRV records: targets resolved to A records with the SRV ports", async () => {
    const zone: Zone = {
      a: { "pod-a.test": ["10.0.1.1"], "pod-b.test": ["10.0.1.2"] },
      srv: { "_grpc._tcp.greeter.test": [{ target: "pod-a.test", port: 7001 }, { target: "pod-b.test", port: 7002 }] },
      ttl: 30,
    };
    const dns = await startDns(zone);
    cleanups.push(() => dns.server.close());
    const r = new DnsResolver("_grpc._tcp.greeter.test:0", { servers: [`127.0.0.1:${dns.port}`] });
    expect((await r.resolveOnce()).addresses).toEqual(["10.0.1.1:7001", "10.0.1.2:7002"]);
  });

  test("an unknown name fails the lookup and nothing is reported", async () => {
    const dns = await startDns({ a: {}, srv: {}, ttl: 1 });
    cleanups.push(() => dns.server.close());
    const r = new DnsResolver("nope.test:1", { servers: [`127.0.0.1:${dns.port}`], retryMs: 20 });
    cleanups.push(() => r.close());
    const updates: string[][] = [];
    r.start((a) => updates.push(a));
    await waitFor(() => dns.queries() >= 2, { what: "a retried lookup" });
    expect(updates).toEqual([]);
  });

  test("names only /etc/hosts knows fall back to the system resolver", async () => {
    const r = new DnsResolver("localhost:9");
    const { addresses } = await r.resolveOnce();
    expect(addresses.some((a) => a === "127.0.0.1:9" || a === "[::1]:9")).toBe(true);
  });
});
