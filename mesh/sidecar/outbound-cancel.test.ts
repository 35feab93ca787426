// Outbound, real processes: the app (this test, over the SDK) cancels a call while the upstream attempt
// is in flight. The attempt is cancelled at the upstream (the sidecar listens for the app's abort
// without an AbortSignal per call), not retried, and its circuit-breaker slot comes back.
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { join } from "node:path";
import { connect, type MeshConnection, RpcError, Status } from "../../runtime/sdk/index.ts";
import { TestResources, waitFor } from "../../test/helpers.ts";
import { FakeUpstream } from "./testdata/fake-upstream.ts";
import { ECHO_PROTO, metric, type RunningSidecar, scrape, startSidecar, writeMeshYaml } from "./testdata/harness.ts";

setDefaultTimeout(60_000);

const res = new TestResources();
let up: FakeUpstream;
let sidecar: RunningSidecar;
let app: MeshConnection;
let echo: Record<string, (req?: unknown, opts?: object) => any>;

beforeAll(async () => {
  up = await new FakeUpstream("up").start();
  const dir = res.scratchDir("sidecar-outbound-cancel-");
  const config = writeMeshYaml(dir, [
    {
      name: "main",
      sidecar: {
        upstreams: [
          {
            service: "meshtest.Echo",
            endpoints: [up.address],
            retries: { max_attempts: 3, retry_on: ["UNAVAILABLE", "CANCELLED"], base_backoff_ms: 5, max_backoff_ms: 20, budget_percent: 100, min_retries_per_second: 10 },
            circuit_breaker: { max_concurrent: 1, max_pending: 0 },
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

test("the app cancelling a call cancels the upstream attempt, is not retried, and frees the breaker slot", async () => {
  let reached = 0;
  let cancelled = 0;
  up.unary = (_req, _n, call) => {
    reached++;
    call.on("cancelled", () => cancelled++);
  };
  const ac = new AbortController();
  const p = echo.Unary!({ text: "to cancel" }, { signal: ac.signal, timeoutMs: 20_000 }).then(
    () => undefined,
    (e: unknown) => e,
  );
  await waitFor(() => reached === 1, { what: "the call to reach the upstream" });
  ac.abort();
  const e = await p;
  expect(e).toBeInstanceOf(RpcError);
  expect((e as RpcError).code).toBe(Status.CANCELLED);
  await waitFor(() => cancelled === 1, { what: "the upstream to see the call cancelled" });
  // The sidecar recorded CANCELLED for the app's call, one attempt, no retry (even though CANCELLED is in retry_on).
  await waitFor(async () => metric(await scrape(sidecar.admin), "mesh_requests_total", { direction: "outbound", code: "CANCELLED" }) === 1, {
    what: "the cancelled call in /metrics",
  });
  expect(reached).toBe(1);
  // max_concurrent 1, max_pending 0: the next call is refused unless the cancelled attempt gave its slot back.
  up.unary = (req, _n, _call, cb) => cb(null, { text: req.text, app: "up", metadata: {} });
  expect(await echo.Unary!({ text: "after" }, { timeoutMs: 5000 })).toMatchObject({ text: "after" });
});
