// A tiny authoritative DNS server on loopback (dns-packet over UDP) for resolver tests: A and SRV
// answers from a zone the test can change; unknown names get NXDOMAIN.
import dnsPacket from "dns-packet";
import { createSocket, type Socket } from "node:dgram";

export interface Zone {
  a: Record<string, string[]>;
  srv: Record<string, { target: string; port: number }[]>;
  ttl: number;
}

export interface DnsServer {
  server: Socket;
  port: number;
  queries(): number;
  close(): void;
}

export async function startDns(zone: Zone): Promise<DnsServer> {
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
    const known = question ? question.name in zone.a || question.name in zone.srv : false;
    const reply = dnsPacket.encode({
      id: q.id,
      type: "response",
      flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | dnsPacket.AUTHORITATIVE_ANSWER | (known ? 0 : 3), // rcode 3 = NXDOMAIN
      questions: q.questions ?? [],
      answers,
    });
    server.send(reply, rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => server.bind(0, "127.0.0.1", () => r()));
  return { server, port: server.address().port, queries: () => queries, close: () => server.close() };
}
