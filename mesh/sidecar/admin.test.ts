// The admin port's routing and the redaction of /config.
import { afterAll, describe, expect, test } from "bun:test";
import { redactConfig, startAdmin } from "./admin.ts";

let ready: string | undefined = "starting";
const server = startAdmin("127.0.0.1", 0, {
  notReadyReason: () => ready,
  metricsText: async () => "mesh_x 1\n",
  metricsContentType: "text/plain; version=0.0.4",
  effectiveConfig: () => redactConfig({ name: "p", app: { command: "bun", env: { API_TOKEN: "s3cret" } } }),
  status: () => ({ pod: "p", ready: ready === undefined }),
});
const base = `http://127.0.0.1:${server.port}`;
afterAll(() => server.stop(true));

describe("admin port", () => {
  test("/readyz follows readiness and names why not", async () => {
    let r = await fetch(`${base}/readyz`);
    expect(r.status).toBe(503);
    expect(await r.text()).toBe("not ready: starting\n");
    ready = undefined;
    r = await fetch(`${base}/readyz`);
    expect(r.status).toBe(200);
  });

  test("/config hides env values; /metrics has the Prometheus content type; unknown paths 404; POST 405", async () => {
    const cfg = (await (await fetch(`${base}/config`)).json()) as { app: { env: Record<string, string> } };
    expect(cfg.app.env.API_TOKEN).toBe("<redacted>");
    const m = await fetch(`${base}/metrics`);
    expect(m.headers.get("content-type")).toContain("text/plain");
    expect(await m.text()).toBe("mesh_x 1\n");
    expect((await fetch(`${base}/nope`)).status).toBe(404);
    expect((await fetch(`${base}/healthz`, { method: "POST" })).status).toBe(405);
  });
});
