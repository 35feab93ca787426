// The admin HTTP port: /healthz (alive), /readyz (ready for traffic), /metrics (Prometheus text),
// /config (effective pod config, secrets redacted), /status (for `mesh status` and the supervisor).
import type { Server } from "bun";

export interface AdminSource {
  /** undefined when ready, else why not. */
  notReadyReason(): string | undefined;
  metricsText(): Promise<string>;
  metricsContentType: string;
  effectiveConfig(): unknown;
  status(): unknown;
}

export function startAdmin(host: string, port: number, src: AdminSource): Server<undefined> {
  const json = (body: unknown, status = 200) =>
    new Response(JSON.stringify(body, null, 2) + "\n", { status, headers: { "content-type": "application/json" } });
  try {
    return Bun.serve({
      hostname: host,
      port,
      async fetch(req) {
        const path = new URL(req.url).pathname;
        if (req.method !== "GET" && req.method !== "HEAD") return new Response("only GET\n", { status: 405, headers: { allow: "GET, HEAD" } });
        switch (path) {
          case "/healthz":
            return new Response("ok\n");
          case "/readyz": {
            const why = src.notReadyReason();
            return why ? new Response(`not ready: ${why}\n`, { status: 503 }) : new Response("ready\n");
          }
          case "/metrics":
            return new Response(await src.metricsText(), { headers: { "content-type": src.metricsContentType } });
          case "/config":
            return json(src.effectiveConfig());
          case "/status":
            return json(src.status());
          default:
            return new Response("not found; try /healthz /readyz /metrics /config /status\n", { status: 404 });
        }
      },
    });
  } catch (e) {
    throw new Error(`cannot listen for admin HTTP on ${host}:${port}: ${(e as Error).message} — pick a free port in sidecar.admin.port (0 picks one)`);
  }
}

/** Replaces values that may be secrets (app env values, key paths' contents are never read) with "<redacted>". */
export function redactConfig<T>(config: T): T {
  const copy = structuredClone(config) as Record<string, unknown>;
  const app = copy.app as { env?: Record<string, string> } | undefined;
  if (app?.env) for (const k of Object.keys(app.env)) app.env[k] = "<redacted>";
  return copy as T;
}
