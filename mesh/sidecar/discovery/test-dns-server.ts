// A tiny authoritative DNS server on loopback UDP for tests (dns-packet encodes the answers), so the
// TTL, NXDOMAIN, SERVFAIL and silence cases are the ones c-ares really sees.
import { createSocket, type Socket } from "node:dgram";
import * as packet from "dns-packet";

export type Mode = "answer" | "servfail" | "silent";

/** A tiny authoritative server: `records` can change between queries, like a Service's endpoints. */
export class TestDnsServer {
  a = new Map<string, string[]>();
  aaaa = new Map<string, string[]>();
  srv = new Map<string, { target: string; port: number; priority?: number }[]>();
  ttl = 1;
  mode: Mode = "answer";
  queries: { name: string; type: string }[] = [];
  private sock: Socket = createSocket("udp4");
  port = 0;

  async start(): Promise<void> {
    this.sock.on("message", (msg, rinfo) => {
      let q: packet.Packet;
      try {
        q = packet.decode(msg);
      } catch {
        return;
      }
      const question = q.questions?.[0];
      if (!question) return;
      this.queries.push({ name: question.name, type: question.type });
      if (this.mode === "silent") return;
      const answers: packet.Answer[] = [];
      let rcode = 0;
      if (this.mode === "servfail") rcode = 2;
      else {
        const name = question.name.toLowerCase();
        const known = this.a.has(name) || this.aaaa.has(name) || this.srv.has(name);
        if (!known) rcode = 3; // NXDOMAIN
        if (question.type === "A") for (const ip of this.a.get(name) ?? []) answers.push({ type: "A", name, ttl: this.ttl, data: ip });
        if (question.type === "AAAA") for (const ip of this.aaaa.get(name) ?? []) answers.push({ type: "AAAA", name, ttl: this.ttl, data: ip });
        if (question.type === "SRV") {
          for (const s of this.srv.get(name) ?? []) {
            answers.push({ type: "SRV", name, ttl: this.ttl, data: { target: s.target, port: s.port, priority: s.priority ?? 0, weight: 10 } });
          }
        }
      }
      const reply = packet.encode({
        type: "response",
        id: q.id,
        flags: packet.AUTHORITATIVE_ANSWER | rcode,
        questions: q.questions,
        answers,
      });
      this.sock.send(reply, rinfo.port, rinfo.address);
    });
    await new Promise<void>((resolve) => this.sock.bind(0, "127.0.0.1", resolve));
    this.port = this.sock.address().port;
  }

  get server(): string {
    return `127.0.0.1:${this.port}`;
  }

  close(): void {
    this.sock.close();
  }
}

