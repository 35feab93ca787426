// The bench's client for transport-level one-way rows: negotiates a session with
// bench/servers/echo-messages.ts (runtime/transport negotiate, no RPC channel) and sends 32-byte frames
// one at a time, each stamped with the TSC just before it is handed to the transport; the server
// records the cycles until it sees it and echoes it back, and the echo sends the next one (one message
// in flight, as in the C reference). Prints one JSON line per job.
// Usage: bun bench/clients/message-client.ts '<ClientSpec JSON>'
import { connectToSidecar } from "../../runtime/transport/negotiate.ts";
import { FrameKind } from "../../runtime/rpc/frame.ts";
import type { Transport, TransportChoice } from "../../runtime/transport/types.ts";
import type { ClientResult, ClientSpec } from "../lib/client-protocol.ts";
import { closeWindow, openWindow, tscHz } from "../lib/measure-window.ts";
import { MESSAGE_SAMPLE, MESSAGE_STATS } from "../lib/methods.ts";
import { exitWhenOrphaned } from "../lib/orphan-guard.ts";
import { openTsc, type CycleStats } from "../lib/tsc.ts";

exitWhenOrphaned();
const spec = JSON.parse(Bun.argv[2] ?? "null") as ClientSpec | null;
if (!spec) {
  console.error("usage: bun bench/clients/message-client.ts '<ClientSpec JSON>' (run by bench/run.ts)");
  process.exit(2);
}
const PAYLOAD = 32;
const tsc = openTsc(spec.tscLib);
const session = await connectToSidecar({ socketPath: spec.socketPath, transport: spec.transport as TransportChoice, appName: "bench-messages" });
if (session.chosen !== spec.transport) throw new Error(`asked for transport ${spec.transport}, the session runs over ${session.chosen}`);
const t: Transport = session.transport;
const message = new Uint8Array(PAYLOAD).fill(0x5a);
const stamp = new DataView(message.buffer);

/** What the next frame from the server completes. */
let onEcho: (body: Uint8Array) => void = () => {};
let onStats: (stats: CycleStats) => void = () => {};
let closed: Error | undefined;
let onClosed: (e: Error) => void = () => {};
t.start({
  onFrame(_kind, _flags, _callId, aux, body) {
    if (aux === MESSAGE_SAMPLE) onEcho(body);
    else if (aux === MESSAGE_STATS) onStats(JSON.parse(new TextDecoder().decode(body)) as CycleStats);
  },
  onClose(error) {
    closed = error ?? new Error("the session closed");
    onClosed(closed);
  },
});

function send(aux: number, body: Uint8Array): void {
  if (closed) throw closed;
  t.send(FrameKind.MESSAGE, 0, 1, aux, body);
}

function stats(): Promise<CycleStats> {
  return new Promise((resolve, reject) => {
    onStats = resolve;
    onClosed = reject;
    send(MESSAGE_STATS, new Uint8Array(0));
  });
}

/** n messages, one in flight, stopping at the deadline; resolves with the round trips (ms). */
function exchange(n: number, deadline: number): Promise<{ sent: number; lat: Float64Array }> {
  const lat = new Float64Array(n);
  let i = 0;
  let started = 0;
  let mismatches = 0;
  return new Promise((resolve, reject) => {
    onClosed = reject;
    const next = () => {
      started = performance.now();
      stamp.setFloat64(0, tsc(), true);
      send(MESSAGE_SAMPLE, message);
    };
    onEcho = (body) => {
      lat[i++] = performance.now() - started;
      if (body.length !== PAYLOAD || body[PAYLOAD - 1] !== 0x5a) mismatches++;
      if (i < n && ((i & 255) !== 0 || performance.now() < deadline)) next();
      else if (mismatches > 0) reject(new Error(`${mismatches} echoed messages differed from what was sent`));
      else resolve({ sent: i, lat });
    };
    next();
  });
}

async function oneWay(n: number, maxMs: number): Promise<Omit<ClientResult, "kind">> {
  await stats(); // drop the warm-up's samples
  const w = openWindow(spec!.serverPid);
  const { sent, lat } = await exchange(n, performance.now() + maxMs);
  const r = closeWindow(w, sent, lat, sent);
  const s = await stats();
  if (s.count !== sent) throw new Error(`server recorded ${s.count} one-way samples, expected ${sent}`);
  const hz = tscHz(tsc);
  return { ...r, median_us: (s.median / hz) * 1e6, p99_us: (s.p99 / hz) * 1e6, round_trip_median_us: r.median_us, tsc_hz: hz, cycles: s };
}

for (const job of spec.jobs) {
  if (job.kind !== "message-one-way") throw new Error(`message-client runs message-one-way jobs only, not ${job.kind}`);
  // Warm-up as in rpc-client.ts: JSC's top tier arrives only after thousands of messages.
  await exchange(Math.min(20_000, Math.max(500, Math.floor(job.iterations / 5))), performance.now() + spec.maxJobMs / 4);
  const result: ClientResult = { kind: job.kind, ...(await oneWay(job.iterations, spec.maxJobMs)) };
  if (result.iterations < job.iterations) result.note = `time limit: ${result.iterations} of ${job.iterations} messages in ${spec.maxJobMs / 1000} s (machine busy?)`;
  console.log(JSON.stringify(result));
}
session.transport.close("bench done");
session.control.close("bench done");
process.exit(0);
