// The bench's server process: a sidecar-side endpoint (runtime/sdk acceptApps) that echoes 32-byte
// unary calls and, for one-way rows, records the TSC cycles from the client's send to the moment
// the handler receives the request. Prints "READY" once listening.
// Usage: bun bench/servers/echo-sidecar.ts SOCKET_PATH TRANSPORT TSC_LIB
import { acceptApps } from "../../runtime/sdk/sidecar.ts";
import type { ServerCall } from "../../runtime/rpc/types.ts";
import type { TransportChoice } from "../../runtime/transport/types.ts";
import { ECHO, ONE_WAY, ONE_WAY_STATS } from "../lib/methods.ts";
import { cycleStats, openTsc } from "../lib/tsc.ts";
import { exitWhenOrphaned } from "../lib/orphan-guard.ts";

exitWhenOrphaned();
const [socketPath, transport, tscLib] = Bun.argv.slice(2);
if (!socketPath || !transport || !tscLib) {
  console.error("usage: bun bench/servers/echo-sidecar.ts SOCKET_PATH TRANSPORT TSC_LIB");
  process.exit(2);
}
const tsc = openTsc(tscLib);
const MAX_SAMPLES = 2_000_000;
const samples = new Float64Array(MAX_SAMPLES);
let count = 0;
const tscView = new DataView(new ArrayBuffer(8));

const NO_MESSAGE = new Uint8Array(0);

/** The request: usually it came with the call (takeRequest), else the first message to arrive. */
async function request(call: ServerCall): Promise<Uint8Array | undefined> {
  const taken = call.takeRequest();
  if (taken !== undefined) return taken;
  const first = await call[Symbol.asyncIterator]().next();
  return first.done ? undefined : first.value;
}

async function handle(call: ServerCall): Promise<void> {
  const first = call.takeRequest() ?? (await request(call));
  if (call.method === ONE_WAY && first !== undefined) {
    const now = tsc();
    const req = first;
    if (req.byteLength >= 8 && count < MAX_SAMPLES) {
      // The request view may be unaligned: copy the 8 bytes out instead of a Float64Array view.
      for (let i = 0; i < 8; i++) tscView.setUint8(i, req[i] ?? 0);
      samples[count++] = now - tscView.getFloat64(0, true);
    }
  }
  if (call.method === ONE_WAY_STATS) {
    const stats = cycleStats(samples, count);
    count = 0;
    await call.write(new TextEncoder().encode(JSON.stringify(stats)));
  } else if (call.method === ECHO || call.method === ONE_WAY) {
    // As the SDK's unary handler answers: the response and the OK status in one step.
    call.respond(first ?? NO_MESSAGE);
  } else {
    call.end(12, `bench server has no method ${call.method}`);
  }
}

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
