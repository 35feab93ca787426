// The bench's server process: a sidecar-side endpoint (runtime/sdk acceptApps) that serves the bench
// handler (lib/echo-handler.ts: echoes 32-byte unary calls, records one-way TSC cycles). Prints
// "READY" once listening.
// Usage: bun bench/servers/echo-sidecar.ts SOCKET_PATH TRANSPORT TSC_LIB
import { acceptApps } from "../../runtime/sdk/sidecar.ts";
import type { TransportChoice } from "../../runtime/transport/types.ts";
import { echoHandler } from "../lib/echo-handler.ts";
import { openTsc } from "../lib/tsc.ts";
import { exitWhenOrphaned } from "../lib/orphan-guard.ts";

exitWhenOrphaned();
const [socketPath, transport, tscLib] = Bun.argv.slice(2);
if (!socketPath || !transport || !tscLib) {
  console.error("usage: bun bench/servers/echo-sidecar.ts SOCKET_PATH TRANSPORT TSC_LIB");
  process.exit(2);
}
const handle = echoHandler(openTsc(tscLib));

// run.ts ends the server with SIGTERM: exit through process.exit so "exit" handlers run (the rpal
// binding releases its service there, which for the test double removes its /dev/shm files).
process.once("SIGTERM", () => process.exit(0));

await acceptApps({
  socketPath,
  transport: transport as TransportChoice,
  onSession(session) {
    session.channel.setHandler(handle);
  },
  onRejected(reason) {
    console.error(`bench server rejected a session: ${reason}`);
  },
});
console.log("READY");
