// The bench's server for transport-level one-way rows: accepts one app session (runtime/transport
// negotiate, no RPC channel) and echoes every 32-byte frame straight back through the transport,
// recording rdtsc(now) − the TSC the client put in the frame's first 8 bytes. This is what RPAL's
// published 1,703 cycles measures: a message from one process to another, no RPC framework on top.
// Frames: aux 0 = a timed message (echoed); aux 1 = "send the statistics as JSON and reset".
// Prints "READY" once listening.
// Usage: bun bench/servers/echo-messages.ts SOCKET_PATH TRANSPORT TSC_LIB
import { acceptAppSessions } from "../../runtime/transport/negotiate.ts";
import { FrameKind } from "../../runtime/rpc/frame.ts";
import type { TransportChoice } from "../../runtime/transport/types.ts";
import { cycleStats, openTsc } from "../lib/tsc.ts";
import { exitWhenOrphaned } from "../lib/orphan-guard.ts";
import { MESSAGE_SAMPLE, MESSAGE_STATS } from "../lib/methods.ts";

exitWhenOrphaned();
const [socketPath, transport, tscLib] = Bun.argv.slice(2);
if (!socketPath || !transport || !tscLib) {
  console.error("usage: bun bench/servers/echo-messages.ts SOCKET_PATH TRANSPORT TSC_LIB");
  process.exit(2);
}
const tsc = openTsc(tscLib);
const MAX_SAMPLES = 2_000_000;
const samples = new Float64Array(MAX_SAMPLES);
const stamp = new DataView(new ArrayBuffer(8));
let count = 0;

process.once("SIGTERM", () => process.exit(0));

await acceptAppSessions({
  socketPath,
  transport: transport as TransportChoice,
  onSession({ transport: t }) {
    t.start({
      onFrame(kind, flags, callId, aux, body) {
        if (aux === MESSAGE_SAMPLE) {
          const now = tsc();
          if (body.length >= 8 && count < MAX_SAMPLES) {
            // The body is a view into a ring or socket buffer, maybe unaligned: copy the 8 bytes out.
            for (let i = 0; i < 8; i++) stamp.setUint8(i, body[i]!);
            samples[count++] = now - stamp.getFloat64(0, true);
          }
          t.send(kind, flags, callId, aux, body);
        } else if (aux === MESSAGE_STATS) {
          const stats = cycleStats(samples, count);
          count = 0;
          t.send(FrameKind.MESSAGE, 0, callId, MESSAGE_STATS, new TextEncoder().encode(JSON.stringify(stats)));
        }
      },
      onClose(error) {
        if (error) console.error(`bench message session closed: ${error.message}`);
      },
    });
  },
  onRejected(reason) {
    console.error(`bench server rejected a session: ${reason}`);
  },
});
console.log("READY");
