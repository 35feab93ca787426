// The per-call counters and histogram are kept outside prom-client between scrapes: /metrics must read
// exactly as if every call had gone through prom-client's own inc()/observe().
import { expect, test } from "bun:test";
import { Counter, Histogram, Registry } from "prom-client";
import { statusName } from "../../runtime/rpc/status.ts";
import { SidecarMetrics } from "./metrics.ts";

const BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

function reference() {
  const registry = new Registry();
  registry.setDefaultLabels({ pod: "p" });
  const r = [registry];
  const requests = new Counter({ name: "mesh_requests_total", help: "x", labelNames: ["direction", "method", "code"], registers: r });
  const duration = new Histogram({ name: "mesh_request_duration_seconds", help: "x", labelNames: ["direction", "method"], buckets: BUCKETS, registers: r });
  const attempts = new Counter({ name: "mesh_upstream_attempts_total", help: "x", labelNames: ["service", "endpoint", "code"], registers: r });
  return { registry, requests, duration, attempts };
}

/** The sample lines of one metric family (no HELP/TYPE), sorted. */
function family(text: string, name: string): string[] {
  return text
    .split("\n")
    .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name}_bucket{`) || l.startsWith(`${name}_sum{`) || l.startsWith(`${name}_count{`))
    .sort();
}

test("metrics: requests, durations and attempts read as prom-client's own inc()/observe() would, across scrapes", async () => {
  const m = new SidecarMetrics("p", () => [], () => {}, () => 0);
  const ref = reference();
  const calls: [("inbound" | "outbound"), string, number, number][] = [];
  const methods = ["/a.S/One", "/a.S/Two", "other"];
  let x = 1;
  const rnd = () => ((x = (x * 1103515245 + 12345) % 2147483648) / 2147483648);
  for (let i = 0; i < 3000; i++) {
    const code = [0, 0, 0, 14, 4, 1, 16, 2, 99][Math.floor(rnd() * 9)]!;
    calls.push([rnd() < 0.5 ? "inbound" : "outbound", methods[Math.floor(rnd() * 3)]!, code, rnd() ** 4 * 12]);
  }
  calls.push(["inbound", "/a.S/One", 0, 0.001], ["inbound", "/a.S/One", 0, 10], ["inbound", "/a.S/One", 0, 0]);
  const attempts: [string, string, number][] = [];
  for (let i = 0; i < 500; i++) attempts.push([rnd() < 0.5 ? "a.S" : "b.T", `10.0.0.${Math.floor(rnd() * 3)}:5`, [0, 14, 4, 77][Math.floor(rnd() * 4)]!]);

  const scrape = async () => {
    const [got, want] = [await m.text(), await ref.registry.metrics()];
    for (const name of ["mesh_requests_total", "mesh_request_duration_seconds", "mesh_upstream_attempts_total"]) expect(family(got, name)).toEqual(family(want, name));
  };
  for (let part = 0; part < 3; part++) {
    for (const [d, method, code, s] of calls.slice(part * 1001, (part + 1) * 1001)) {
      m.observe(d, method, code, s);
      ref.requests.inc({ direction: d, method, code: statusName(code) });
      ref.duration.observe({ direction: d, method }, s);
    }
    for (const [service, endpoint, code] of attempts.slice(part * 167, (part + 1) * 167)) {
      m.attempt(service, endpoint, code);
      ref.attempts.inc({ service, endpoint, code: statusName(code) });
    }
    if (part === 1) m.forgetEndpoint("a.S", "10.0.0.1:5"); // its counts stay
    await scrape();
  }
  expect(family(await m.text(), "mesh_requests_total").length).toBeGreaterThan(10);
  // An endpoint forgotten and used again keeps counting on the same series.
  m.attempt("a.S", "10.0.0.1:5", 0);
  ref.attempts.inc({ service: "a.S", endpoint: "10.0.0.1:5", code: "OK" });
  await scrape();
});
