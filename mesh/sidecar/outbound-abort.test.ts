// Outbound, real processes: the app giving up on a call while the sidecar waits for an attempt or for a
// retry's backoff (OutboundCall listens through the call's onAbort and acts a microtask later, once the
// channel has ended the call). The upstream fails
// UNAVAILABLE unless a test says otherwise; the backoff is long (full jitter up to 60 s, doubling per
// retry), so a call is almost always between attempts when it matters.
// - Cancelling during a backoff ends the call at once: CANCELLED, logged and counted, no later attempt.
// - A backoff that would outlast the deadline is not waited: the failure is returned at once, saying so.
// - Cancelling while an attempt runs records what the app saw (the channel's reason), not the
//   cancelled attempt's status.
// - Cancelling some of many calls in flight cancels those and no other.
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import { join } from "node:path";
import { connect, type MeshConnection, RpcError, Status } from "../../runtime/sdk/index.ts";
import { TestResources, waitFor } from "../../test/helpers.ts";
import { FakeUpstream, fail } from "./testdata/fake-upstream.ts";
import { ECHO_PROTO, metric, type RunningSidecar, scrape, startSidecar, writeMeshYaml } from "./testdata/harness.ts";

setDefaultTimeout(60_000);

const res = new TestResources();
let up: FakeUpstream;
let sidecar: RunningSidecar;
let app: MeshConnection;
let echo: Record<string, (req?: unknown, opts?: object) => any>;

beforeAll(async () => {
  up = await new FakeUpstream("up").start();
  up.unary = (_req, _n, _call, cb) => cb(fail(grpc.status.UNAVAILABLE, "down"));
  const dir = res.scratchDir("sidecar-outbound-abort-");
  const config = writeMeshYaml(dir, [
    {
      name: "main",
      sidecar: {
        upstreams: [
          {
            service: "meshtest.Echo",
            endpoints: [up.address],
            timeout_ms: 3_600_000,
            retries: { max_attempts: 5, retry_on: ["UNAVAILABLE"], base_backoff_ms: 60_000, max_backoff_ms: 600_000, budget_percent: 100, min_retries_per_second: 10 },
            outlier_detection: { consecutive_failures: 1000, base_ejection_ms: 1000, max_ejection_percent: 50 },
          },
        ],
      },
    },
  ]);
  sidecar = await startSidecar(res, config, "main", join(dir, "main", "app.sock"));
  app = await connect({ socketPath: sidecar.socket, reconnect: false });
  echo = app.client(ECHO_PROTO, "meshtest.Echo");
});

afterAll(async () => {
  await app?.close(100).catch(() => undefined);
  up?.stop();
  await res.cleanup();
});

function accessLines(): Record<string, unknown>[] {
  return sidecar.proc
    .output()
    .split("\n")
    .filter((l) => l.includes('"component":"access"'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function rejection(p: Promise<unknown>): Promise<RpcError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(RpcError);
  return e as RpcError;
}

test("the app cancelling during a retry backoff ends the call at once, CANCELLED, with no later attempt", async () => {
  const before = up.seen.length;
  const ac = new AbortController();
  const p = rejection(echo.Unary!({ text: "cancel me" }, { signal: ac.signal }));
  await waitFor(async () => metric(await scrape(sidecar.admin), "mesh_upstream_retries_total", { service: "meshtest.Echo" }) >= 1, {
    what: "the first failure to be scheduled for a retry",
  });
  ac.abort();
  expect((await p).code).toBe(Status.CANCELLED);
  await waitFor(async () => metric(await scrape(sidecar.admin), "mesh_requests_total", { direction: "outbound", code: "CANCELLED" }) === 1, {
    what: "the cancelled call in /metrics",
  });
  const line = await waitFor(() => accessLines().find((l) => l.code === "CANCELLED"), { what: "the cancelled call's access-log line" });
  expect(line).toMatchObject({ direction: "outbound", method: "/meshtest.Echo/Unary", upstream: up.address });
  const attempts = line.attempts as number;
  expect(attempts).toBeGreaterThanOrEqual(1);
  // The backoff timer went with the call: no attempt after it ended.
  await Bun.sleep(300);
  expect(up.seen.length - before).toBe(attempts);
});

test("a backoff that would outlast the deadline is not waited: the failure comes back at once, saying why", async () => {
  const before = up.seen.length;
  const started = Date.now();
  const e = await rejection(echo.Unary!({ text: "no time" }, { timeoutMs: 1500 }));
  expect(e.code).toBe(Status.UNAVAILABLE);
  expect(e.details).toBe("down (not retried: the deadline would pass during backoff)");
  expect(Date.now() - started).toBeLessThan(1400);
  expect(up.seen.length - before).toBeGreaterThanOrEqual(1);
});

test("the app cancelling while an attempt runs: the call is recorded with the channel's reason, not the attempt's CANCELLED", async () => {
  const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
  up.unary = up.hang();
  try {
    const ac = new AbortController();
    const p = rejection(echo.Unary!({ text: "in flight" }, { signal: ac.signal, metadata: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` } }));
    await waitFor(() => up.heldCount === 1, { what: "the attempt to reach the upstream" });
    ac.abort();
    expect((await p).code).toBe(Status.CANCELLED);
    const line = await waitFor(() => accessLines().find((l) => l.trace_id === traceId), { what: "the call's access-log line" });
    expect(line).toMatchObject({ code: "CANCELLED", details: "cancelled by the client", attempts: 1 });
  } finally {
    up.release();
    up.unary = (_req, _n, _call, cb) => cb(fail(grpc.status.UNAVAILABLE, "down"));
  }
});

test("cancelling some of many calls in flight cancels exactly those upstream; the others are answered", async () => {
  const cancelled: string[] = [];
  const hang = up.hang();
  up.unary = (req, n, call, cb) => {
    call.on("cancelled", () => cancelled.push(req.text));
    hang(req, n, call, cb);
  };
  try {
    const held = up.heldCount;
    const calls = Array.from({ length: 20 }, (_, i) => {
      const ac = new AbortController();
      const p = echo.Unary!({ text: `c${i}` }, { signal: ac.signal, timeoutMs: 20_000 }).then(
        (r: { text: string }) => r.text,
        (e: unknown) => (e instanceof RpcError ? `code ${e.code}` : String(e)),
      );
      return { ac, p };
    });
    await waitFor(() => up.heldCount === held + 20, { what: "all 20 attempts to reach the upstream" });
    for (let i = 1; i < 20; i += 2) calls[i]!.ac.abort();
    const odd = Array.from({ length: 10 }, (_, k) => `c${2 * k + 1}`);
    await waitFor(() => cancelled.length === 10, { what: "the upstream to see 10 calls cancelled" });
    expect(cancelled.toSorted()).toEqual(odd.toSorted());
    up.release();
    const outcomes = await Promise.all(calls.map((c) => c.p));
    outcomes.forEach((o, i) => expect(o).toBe(i % 2 ? `code ${Status.CANCELLED}` : "released"));
  } finally {
    up.release();
    up.unary = (_req, _n, _call, cb) => cb(fail(grpc.status.UNAVAILABLE, "down"));
  }
});
