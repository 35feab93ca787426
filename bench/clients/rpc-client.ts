// The bench's client process: connects to the bench server as an app (runtime/sdk connect) over one
// transport and runs the jobs it is given, printing one JSON line per job. CPU time of both processes
// comes from /proc (runtime/procstat.ts) over exactly the measured window.
// With transport "floor" (FLOOR) there is no server process: the bench handler is served in this
// process over the in-memory pair (lib/rpc-floor.ts), and the same jobs measure the RPC layer alone;
// CPU is then this process's, all threads.
// Usage: bun bench/clients/rpc-client.ts '<ClientSpec JSON>'
import { connect } from "../../runtime/sdk/app.ts";
import type { RpcChannel } from "../../runtime/rpc/channel.ts";
import { closeWindow, openWindow, tscHz } from "../lib/measure-window.ts";
import type { TransportChoice } from "../../runtime/transport/types.ts";
import { ECHO, ONE_WAY, ONE_WAY_STATS } from "../lib/methods.ts";
import { openTsc, type CycleStats } from "../lib/tsc.ts";
import { type ClientJob, type ClientResult, type ClientSpec, FLOOR } from "../lib/client-protocol.ts";
import { echoHandler } from "../lib/echo-handler.ts";
import { exitWhenOrphaned } from "../lib/orphan-guard.ts";
import { openRpcFloor } from "../lib/rpc-floor.ts";

exitWhenOrphaned();
const spec = JSON.parse(Bun.argv[2] ?? "null") as ClientSpec | null;
if (!spec) {
  console.error("usage: bun bench/clients/rpc-client.ts '<ClientSpec JSON>' (run by bench/run.ts)");
  process.exit(2);
}
const PAYLOAD = 32;
const serverPid = spec.serverPid;
const tsc = openTsc(spec.tscLib);
/** The channel the jobs call through, and how to end its session. */
async function openSession(): Promise<{ channel: RpcChannel; close(): Promise<void> }> {
  if (spec!.transport === FLOOR) {
    const floor = openRpcFloor(echoHandler(tsc));
    return { channel: floor.client, close: () => floor.close() };
  }
  const mesh = await connect({ socketPath: spec!.socketPath, transport: spec!.transport as TransportChoice, reconnect: false, appName: "bench" });
  if (mesh.transport !== spec!.transport) throw new Error(`asked for transport ${spec!.transport}, the session runs over ${mesh.transport}`);
  return { channel: mesh.currentChannel as RpcChannel, close: () => mesh.close() };
}
const session = await openSession();
const channel = session.channel;
const request = new Uint8Array(PAYLOAD).fill(0x5a);

let mismatches = 0;
async function call(method: string, req: Uint8Array): Promise<void> {
  const { response } = await channel.unary(method, req);
  if (response.byteLength !== req.byteLength || response[PAYLOAD - 1] !== req[PAYLOAD - 1] || response[0] !== req[0]) mismatches++;
}

/**
 * Every job stops at its iteration count or at its time limit, whichever comes first, and reports the
 * calls it made: on a machine crowded with other work a pinned spinner can slow to a crawl, and the
 * bench must still end in bounded time.
 */
let deadline = Infinity;
const overTime = (i: number) => (i & 255) === 0 && performance.now() > deadline;

async function closedLoop(n: number): Promise<Omit<ClientResult, "kind">> {
  const lat = new Float64Array(n);
  const w = openWindow(serverPid);
  let i = 0;
  for (; i < n && !overTime(i); i++) {
    const t = performance.now();
    await call(ECHO, request);
    lat[i] = performance.now() - t;
  }
  return closeWindow(w, i, lat, i);
}

async function pipelined(n: number, inFlight: number): Promise<Omit<ClientResult, "kind">> {
  const lat = new Float64Array(n);
  let started = 0;
  let done = 0;
  const lane = async () => {
    while (started < n && !overTime(started)) {
      started++;
      const t = performance.now();
      await call(ECHO, request);
      lat[done++] = performance.now() - t;
    }
  };
  const w = openWindow(serverPid);
  await Promise.all(Array.from({ length: inFlight }, lane));
  return closeWindow(w, done, lat, done);
}

const MAX_OUTSTANDING = 4096;

/** Open loop: calls are started on a 1 ms tick at the offered rate whether or not earlier ones finished. */
async function fixedRate(rate: number, durationMs: number): Promise<Omit<ClientResult, "kind">> {
  const max = Math.ceil((rate * durationMs) / 1000);
  const lat = new Float64Array(max);
  let sent = 0;
  let done = 0;
  let skipped = 0;
  const outstanding = new Set<Promise<void>>();
  const w = openWindow(serverPid);
  const start = performance.now();
  await new Promise<void>((resolve) => {
    const tick = setInterval(() => {
      const now = performance.now();
      const due = Math.min(max, Math.floor(((now - start) * rate) / 1000));
      while (sent < due) {
        // Past MAX_OUTSTANDING the client is hopelessly behind: skip (and count) instead of queueing
        // without bound, which would measure the client's own queue, not the transport.
        if (outstanding.size >= MAX_OUTSTANDING) {
          skipped += due - sent;
          sent = due;
          break;
        }
        sent++;
        const t = performance.now();
        const p: Promise<void> = call(ECHO, request).then(() => {
          lat[done++] = performance.now() - t; // by completion: with skipped calls, send order has holes
          outstanding.delete(p);
        });
        outstanding.add(p);
      }
      // Rate 0 is the idle baseline: the ticker alone for the whole duration.
      if (sent >= max && now - start >= durationMs) {
        clearInterval(tick);
        resolve();
      }
    }, 1);
  });
  await Promise.all(outstanding);
  const r = closeWindow(w, done, lat, done);
  return { ...r, target_calls_per_s: rate, skipped };
}

async function oneWay(n: number): Promise<Omit<ClientResult, "kind">> {
  const lat = new Float64Array(n);
  const req = new Uint8Array(PAYLOAD).fill(0x5a);
  const dv = new DataView(req.buffer);
  await channel.unary(ONE_WAY_STATS, new Uint8Array(0)); // reset the server's samples after warm-up
  const w = openWindow(serverPid);
  let i = 0;
  for (; i < n && !overTime(i); i++) {
    const t = performance.now();
    dv.setFloat64(0, tsc(), true);
    await channel.unary(ONE_WAY, req);
    lat[i] = performance.now() - t;
  }
  n = i;
  const r = closeWindow(w, n, lat, n);
  const hz = tscHz(tsc);
  const stats = JSON.parse(new TextDecoder().decode((await channel.unary(ONE_WAY_STATS, new Uint8Array(0))).response)) as CycleStats;
  if (stats.count !== n) throw new Error(`server recorded ${stats.count} one-way samples, expected ${n}`);
  // median_us/p99_us of a one-way row are one-way (from the cycles), as in the C rows; the round trip the
  // client saw is kept beside them.
  return { ...r, median_us: (stats.median / hz) * 1e6, p99_us: (stats.p99 / hz) * 1e6, round_trip_median_us: r.median_us, tsc_hz: hz, cycles: stats };
}

async function waitForGo(): Promise<void> {
  console.log(JSON.stringify({ await: "go" }));
  const reader = Bun.stdin.stream().getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("stdin closed before 'go'");
    text += new TextDecoder().decode(value);
  }
  reader.releaseLock();
}

async function run(job: ClientJob): Promise<ClientResult> {
  // JSC compiles the per-call path in tiers (baseline, DFG, FTL); the top tier arrives only after
  // thousands of calls. A 2,000-call warm-up left the first third of a 20,000-call closed loop in
  // the lower tiers and read ~30% more CPU per call than the steady state the row is meant to show.
  const warm = Math.min(20_000, Math.max(500, Math.floor((job.iterations ?? 5000) / 5)));
  // Warm-up gets its own bounded slice; the measured part gets the job's limit.
  deadline = performance.now() + spec!.maxJobMs / 4;
  const measure = <T>(f: () => Promise<T>) => {
    deadline = performance.now() + spec!.maxJobMs;
    return f();
  };
  switch (job.kind) {
    case "closed-loop":
      await closedLoop(warm);
      return { kind: job.kind, ...(await measure(() => closedLoop(job.iterations))) };
    case "pipelined":
      await pipelined(warm, job.inFlight);
      return { kind: job.kind, in_flight: job.inFlight, ...(await measure(() => pipelined(job.iterations, job.inFlight))) };
    case "syscalls":
      await pipelined(warm, job.inFlight);
      await waitForGo();
      return { kind: job.kind, in_flight: job.inFlight, ...(await measure(() => pipelined(job.iterations, job.inFlight))) };
    case "fixed-rate":
      await closedLoop(warm);
      return { kind: job.kind, ...(await fixedRate(job.rate, job.durationMs)) };
    case "one-way":
      await oneWay(warm);
      return { kind: job.kind, ...(await measure(() => oneWay(job.iterations))) };
    case "message-one-way":
      throw new Error("message-one-way jobs run in bench/clients/message-client.ts");
  }
}

for (const job of spec.jobs) {
  const result = await run(job);
  if (result.skipped) result.note = `fell behind: ${result.skipped} calls not sent (over ${MAX_OUTSTANDING} outstanding)`;
  else if (job.iterations !== undefined && result.iterations < job.iterations) {
    result.note = `time limit: ${result.iterations} of ${job.iterations} calls in ${spec.maxJobMs / 1000} s (machine busy?)`;
  }
  if (mismatches > 0) throw new Error(`${mismatches} echo replies differed from their requests`);
  console.log(JSON.stringify(result));
}
await session.close();
process.exit(0);
