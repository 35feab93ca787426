// A stand-in for mesh/sidecar/main.ts that keeps the process contract and nothing else: it accepts
// the same flags, listens on the app socket and the admin port, prints the ready line, answers
// /status, and exits 0 on SIGTERM. The supervisor's tests use it so they test supervision, not routing.
// FAKE_SIDECAR_MODE=fail exits 3 before ready; =hang never becomes ready.
import { unlinkSync, existsSync } from "node:fs";
import { parseArgs } from "node:util";
import { findPod, loadConfig } from "../../config/index.ts";

const { values } = parseArgs({
  options: { config: { type: "string" }, pod: { type: "string" }, "app-socket": { type: "string" }, transport: { type: "string" } },
});
const mode = process.env.FAKE_SIDECAR_MODE ?? "";
if (mode === "fail") {
  console.error("fake sidecar: failing on purpose (FAKE_SIDECAR_MODE=fail)");
  process.exit(3);
}
const config = loadConfig(values.config!);
const pod = findPod(config, values.pod!);
const socketPath = values["app-socket"]!;
if (existsSync(socketPath)) unlinkSync(socketPath);
let sessions = 0;
const appListener = Bun.listen({
  unix: socketPath,
  socket: { open: () => void sessions++, close: () => void sessions--, data: () => {} },
});
const admin = Bun.serve({
  hostname: pod.sidecar.admin.host,
  port: pod.sidecar.admin.port,
  fetch: (req) =>
    new URL(req.url).pathname === "/status"
      ? Response.json({ pod: pod.name, ready: true, sessions: [], transport: sessions > 0 ? "uds" : null })
      : new Response("not found", { status: 404 }),
});
const inbound = pod.sidecar.inbound ? Bun.listen({ hostname: pod.sidecar.inbound.host, port: pod.sidecar.inbound.port, socket: { data: () => {} } }) : undefined;
process.on("SIGTERM", () => {
  appListener.stop(true);
  inbound?.stop(true);
  void admin.stop(true);
  if (existsSync(socketPath)) unlinkSync(socketPath);
  process.exit(0);
});
if (mode !== "hang") {
  console.log(
    JSON.stringify({
      event: "ready",
      pod: pod.name,
      inbound: inbound ? `${inbound.hostname}:${inbound.port}` : null,
      admin: `${admin.hostname}:${admin.port}`,
      app_socket: socketPath,
    }),
  );
}
