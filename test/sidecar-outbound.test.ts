// Outbound end to end: this test process is the app (SDK over the pod's Unix socket), the sidecar is a
// real process, and the upstreams are grpc-js servers standing in for remote sidecars. Covers routing,
// metadata and traceparent, retries (and their metrics), deadline across retries, the per-route
// timeout, the circuit breaker and outlier ejection.
import { afterAll, beforeAll, describe, expect, test, setDefaultTimeout } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import { join } from "node:path";
import protobuf from "protobufjs";
import { connect, type MeshConnection, RpcError, Status, statusName } from "../runtime/sdk/index.ts";
import { TestResources, waitFor } from "./helpers.ts";
import { ECHO_PROTO, metric, type RunningSidecar, scrape, startSidecar, writeMeshYaml } from "../mesh/sidecar/testdata/harness.ts";
import { FakeUpstream, fail } from "../mesh/sidecar/testdata/fake-upstream.ts";
import { type DnsServer, startDns } from "../mesh/sidecar/testdata/dns-server.ts";

// Real processes on a shared 2-vCPU machine: room for start-up (the waits inside have their own deadlines).
setDefaultTimeout(60_000);

const res = new TestResources();
const root = protobuf.loadSync(ECHO_PROTO);
const Req = root.lookupType("meshtest.EchoRequest");
const Reply = root.lookupType("meshtest.EchoReply");

let one: FakeUpstream; // the only endpoint of "main"
let good: FakeUpstream; // two endpoints of "pair", one of them failing
let bad: FakeUpstream;
let main: RunningSidecar;
let pair: RunningSidecar;
let viaDns: RunningSidecar;
let noBudget: RunningSidecar;
let dns: DnsServer;
let app: MeshConnection;
let appPair: MeshConnection;
let echo: Record<string, (req?: unknown, opts?: object) => any>;

const RETRIES = { max_attempts: 3, retry_on: ["UNAVAILABLE"], base_backoff_ms: 5, max_backoff_ms: 20, budget_percent: 20, min_retries_per_second: 10 };

beforeAll(async () => {
  one = await new FakeUpstream("one").start();
  good = await new FakeUpstream("good").start();
  bad = await new FakeUpstream("bad").start();
  bad.unary = (_r, _n, _c, cb) => cb(fail(grpc.status.UNAVAILABLE, "bad endpoint"));
  dns = await startDns({ a: { "good.mesh.test": ["127.0.0.1"] }, srv: {}, ttl: 30 });
  const dir = res.scratchDir("sidecar-outbound-");
  const config = writeMeshYaml(dir, [
    {
      name: "main",
      sidecar: {
        upstreams: [
          {
            service: "meshtest.Echo",
            endpoints: [one.address],
            timeout_ms: 1500,
            retries: RETRIES,
            circuit_breaker: { max_concurrent: 1, max_pending: 1 },
            outlier_detection: { consecutive_failures: 1000, base_ejection_ms: 1000, max_ejection_percent: 50 },
          },
        ],
      },
    },
    {
      name: "pair",
      sidecar: {
        upstreams: [
          {
            service: "meshtest.Echo",
            endpoints: [bad.address, good.address],
            lb: "round_robin",
            retries: { ...RETRIES, max_attempts: 1 },
            outlier_detection: { consecutive_failures: 2, base_ejection_ms: 60000, max_ejection_percent: 50 },
          },
        ],
      },
    },
    { name: "viadns", sidecar: { upstreams: [{ service: "meshtest.Echo", dns: `good.mesh.test:${good.port}` }] } },
    {
      name: "nobudget",
      sidecar: { upstreams: [{ service: "meshtest.Echo", endpoints: [bad.address], retries: { ...RETRIES, budget_percent: 0, min_retries_per_second: 0 } }] },
    },
  ]);
  [main, pair, viaDns, noBudget] = await Promise.all([
    startSidecar(res, config, "main", join(dir, "main", "app.sock")),
    startSidecar(res, config, "pair", join(dir, "pair", "app.sock")),
    startSidecar(res, config, "viadns", join(dir, "viadns", "app.sock"), { MESH_DNS_SERVERS: `127.0.0.1:${dns.port}` }),
    startSidecar(res, config, "nobudget", join(dir, "nobudget", "app.sock")),
  ]);
  app = await connect({ socketPath: main.socket, reconnect: false });
  appPair = await connect({ socketPath: pair.socket, reconnect: false });
  echo = app.client(ECHO_PROTO, "meshtest.Echo");
}, 60_000);

afterAll(async () => {
  await app?.close(100).catch(() => undefined);
  await appPair?.close(100).catch(() => undefined);
  for (const u of [one, good, bad]) u?.stop();
  dns?.close();
  await res.cleanup();
});

async function expectCode(p: Promise<unknown>): Promise<RpcError> {
  const e = await p.then(
    () => undefined,
    (err) => err,
  );
  expect(e).toBeInstanceOf(RpcError);
  return e as RpcError;
}

describe("sidecar outbound", () => {
  test("a call reaches the upstream with metadata and a continued traceparent; headers and trailers come back", async () => {
    one.unary = (req, _n, call, cb) => {
      const headers = new grpc.Metadata();
      headers.set("x-up-header", "h1");
      call.sendMetadata(headers);
      const trailers = new grpc.Metadata();
      trailers.set("x-up-trailer", "t1");
      cb(null, { text: `up:${req.text}`, metadata: one.md(call.metadata) }, trailers);
    };
    const before = one.seen.length;
    const r = await app.unary("/meshtest.Echo/Unary", Req.encode(Req.fromObject({ text: "hi" })).finish(), {
      metadata: { "x-user": "ada", traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" },
      timeoutMs: 4000,
    });
    const reply = Reply.toObject(Reply.decode(r.response)) as { text: string };
    expect(reply.text).toBe("up:hi");
    expect(r.headers["x-up-header"]).toBe("h1");
    expect(r.trailers["x-up-trailer"]).toBe("t1");
    const seen = one.seen[before]!;
    expect(seen.metadata["x-user"]).toBe("ada");
    expect(seen.metadata.traceparent).toMatch(/^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/);
    expect(seen.metadata.traceparent).not.toContain("00f067aa0ba902b7");
    // The app asked for 4 s; the route allows 1.5 s: the shorter one goes upstream.
    expect(seen.deadline).toBeDefined();
    expect(seen.deadline! - Date.now()).toBeLessThanOrEqual(1500);
  });

  test("UNAVAILABLE twice then success: the call succeeds and /metrics counts two retries", async () => {
    const before = metric(await scrape(main.admin), "mesh_upstream_retries_total", { service: "meshtest.Echo" });
    const start = one.seen.filter((s) => s.method === "Unary").length;
    // Align the counter so this call's attempts are n = 3k+1, 3k+2, 3k+3.
    one.unary = (req, n, _c, cb) => ((n - start) % 3 === 0 ? cb(null, { text: `ok:${req.text}` }) : cb(fail(grpc.status.UNAVAILABLE)));
    const reply = await echo.Unary!({ text: "retry" }, { timeoutMs: 3000 });
    expect(reply.text).toBe("ok:retry");
    expect(one.seen.filter((s) => s.method === "Unary").length - start).toBe(3);
    const text = await scrape(main.admin);
    expect(metric(text, "mesh_upstream_retries_total", { service: "meshtest.Echo" }) - before).toBe(2);
    expect(metric(text, "mesh_upstream_attempts_total", { service: "meshtest.Echo", code: "UNAVAILABLE" })).toBeGreaterThanOrEqual(2);
    expect(metric(text, "mesh_requests_total", { direction: "outbound", method: "/meshtest.Echo/Unary", code: "OK" })).toBeGreaterThanOrEqual(2);
    // The access log has one JSON line for the call, with its attempts and the endpoint used.
    const line = await waitFor(
      () =>
        main.proc
          .output()
          .split("\n")
          .filter((l) => l.includes('"component":"access"'))
          .map((l) => JSON.parse(l) as Record<string, unknown>)
          .find((e) => e.attempts === 3),
      { what: "the access-log line of the retried call" },
    );
    expect(line).toMatchObject({ direction: "outbound", method: "/meshtest.Echo/Unary", code: "OK", upstream: one.address });
    expect(typeof line.duration_ms).toBe("number");
    expect(line.trace_id).toMatch(/^[0-9a-f]{32}$/);
  });

  test("a non-retryable code is returned at once, with its details", async () => {
    one.unary = (_r, _n, _c, cb) => cb(fail(grpc.status.INVALID_ARGUMENT, "bad name"));
    const start = one.seen.length;
    const e = await expectCode(echo.Unary!({ text: "x" }));
    expect(e.code).toBe(Status.INVALID_ARGUMENT);
    expect(e.details).toBe("bad name");
    expect(one.seen.length - start).toBe(1);
  });

  test("the deadline holds across retries: two slow failures then a hang end in DEADLINE_EXCEEDED at the caller's deadline", async () => {
    const start = one.seen.length;
    // Each failing attempt takes 250 ms, so a per-attempt timeout (the bug this guards against) would give
    // the third attempt a deadline about 500 ms later than the caller's.
    one.unary = (req, n, call, cb) =>
      n - start <= 2 ? setTimeout(() => cb(fail(grpc.status.UNAVAILABLE)), 250) : one.hang()(req, n, call, cb);
    const deadline = Date.now() + 1000;
    const e = await expectCode(echo.Unary!({ text: "late" }, { deadline }));
    expect(e.code).toBe(Status.DEADLINE_EXCEEDED);
    const attempts = one.seen.slice(start);
    expect(attempts.length).toBe(3);
    // Every attempt carried the caller's deadline (give or take the relative grpc-timeout's transit time).
    for (const a of attempts) expect(a.deadline!).toBeLessThan(deadline + 250);
    one.release();
  });

  test("the per-route timeout applies when the app sets no deadline", async () => {
    one.unary = one.hang();
    const e = await expectCode(echo.Unary!({ text: "no deadline" }));
    expect(e.code).toBe(Status.DEADLINE_EXCEEDED);
    one.release();
  });

  test("circuit breaker: max_concurrent 1 + max_pending 1, a third call is refused with RESOURCE_EXHAUSTED; visible in /metrics", async () => {
    one.unary = one.hang();
    const first = echo.Unary!({ text: "a" }, { timeoutMs: 5000 });
    await waitFor(() => one.heldCount === 1, { what: "the first call to reach the upstream" });
    const second = echo.Unary!({ text: "b" }, { timeoutMs: 5000 });
    await waitFor(async () => metric(await scrape(main.admin), "mesh_upstream_pending_requests", { service: "meshtest.Echo" }) === 1, {
      what: "the second call to wait for a slot",
    });
    const e = await expectCode(echo.Unary!({ text: "c" }, { timeoutMs: 5000 }));
    expect(e.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(e.details).toContain("circuit breaker open for upstream meshtest.Echo");
    const text = await scrape(main.admin);
    expect(metric(text, "mesh_circuit_breaker_open", { service: "meshtest.Echo" })).toBe(1);
    expect(metric(text, "mesh_circuit_breaker_rejections_total", { service: "meshtest.Echo" })).toBe(1);
    one.release();
    expect((await first).text).toBe("released");
    await waitFor(() => one.heldCount === 1, { what: "the second call to get the slot" });
    one.release();
    expect((await second).text).toBe("released");
    expect(metric(await scrape(main.admin), "mesh_circuit_breaker_open", { service: "meshtest.Echo" })).toBe(0);
  });

  test("outlier ejection: the failing endpoint is ejected after 2 failures and the rest of the calls go to the healthy one", async () => {
    const client = appPair.client(ECHO_PROTO, "meshtest.Echo");
    const outcomes: string[] = [];
    for (let i = 0; i < 10; i++) {
      outcomes.push(await client.Unary!({ text: `${i}` }).then((r: { app: string }) => r.app, (e: RpcError) => statusName(e.code)));
    }
    expect(bad.seen.length).toBe(2);
    expect(outcomes.filter((o) => o === "good").length).toBe(8);
    expect(outcomes.slice(4)).toEqual(Array(6).fill("good"));
    const text = await scrape(pair.admin);
    expect(metric(text, "mesh_outlier_ejections_total", { service: "meshtest.Echo", endpoint: bad.address })).toBe(1);
    expect(metric(text, "mesh_outlier_ejected", { service: "meshtest.Echo", endpoint: bad.address })).toBe(1);
    expect(metric(text, "mesh_outlier_ejected", { service: "meshtest.Echo", endpoint: good.address })).toBe(0);
  });

  test("server streaming goes through; a service with no upstream is UNIMPLEMENTED naming the fix", async () => {
    one.unary = (req, _n, _c, cb) => cb(null, { text: req.text });
    const got: string[] = [];
    for await (const m of echo.ServerStream!({ text: "s", count: 3 })) got.push(m.text);
    expect(got).toEqual(["s#0", "s#1", "s#2"]);
    const e = await expectCode(app.unary("/other.Service/Call", new Uint8Array(0)));
    expect(e.code).toBe(Status.UNIMPLEMENTED);
    expect(e.details).toContain("sidecar.upstreams");
  });

  test("dns: upstream: the name is resolved through DNS and the call reaches the endpoint it names", async () => {
    const conn = await connect({ socketPath: viaDns.socket, reconnect: false });
    try {
      await waitFor(async () => metric(await scrape(viaDns.admin), "mesh_upstream_endpoints", { service: "meshtest.Echo" }) === 1, {
        what: "the DNS answer to give the upstream its endpoint",
      });
      const before = good.seen.length;
      const reply = await conn.client(ECHO_PROTO, "meshtest.Echo").Unary!({ text: "by name" }, { timeoutMs: 5000 });
      expect(reply.app).toBe("good");
      expect(good.seen.length - before).toBe(1);
      expect(dns.queries()).toBeGreaterThanOrEqual(1);
    } finally {
      await conn.close(100).catch(() => undefined);
    }
  });

  test("an empty retry budget stops retries of a retryable failure, and says so", async () => {
    const conn = await connect({ socketPath: noBudget.socket, reconnect: false });
    try {
      const before = bad.seen.length;
      const e = await expectCode(conn.client(ECHO_PROTO, "meshtest.Echo").Unary!({ text: "x" }, { timeoutMs: 5000 }));
      expect(e.code).toBe(Status.UNAVAILABLE);
      expect(e.details).toContain("retry budget");
      expect(bad.seen.length - before).toBe(1);
      const text = await scrape(noBudget.admin);
      expect(metric(text, "mesh_upstream_retry_budget_exhausted_total", { service: "meshtest.Echo" })).toBe(1);
      expect(metric(text, "mesh_upstream_retries_total", { service: "meshtest.Echo" })).toBe(0);
    } finally {
      await conn.close(100).catch(() => undefined);
    }
  });

  test("bidi and client streaming: every message goes up and every reply comes back (one attempt, no replay)", async () => {
    const bidi = await app.startCall("/meshtest.Echo/Bidi", { clientStreaming: true, serverStreaming: true }, { timeoutMs: 5000 });
    for (const t of ["a", "b", "c"]) await bidi.write(Req.encode(Req.fromObject({ text: t })).finish());
    bidi.end();
    const got: string[] = [];
    for await (const m of bidi) got.push((Reply.toObject(Reply.decode(m)) as { text: string }).text);
    expect(got).toEqual(["bidi:a", "bidi:b", "bidi:c"]);
    expect((await bidi.status).code).toBe(Status.OK);

    const cs = await app.startCall("/meshtest.Echo/ClientStream", { clientStreaming: true, serverStreaming: false }, { timeoutMs: 5000 });
    for (const t of ["x", "y"]) await cs.write(Req.encode(Req.fromObject({ text: t })).finish());
    cs.end();
    const replies: string[] = [];
    for await (const m of cs) replies.push((Reply.toObject(Reply.decode(m)) as { text: string }).text);
    expect(replies).toEqual(["x+y"]);
  });
});
