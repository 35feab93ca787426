// In-process microbenchmarks (tinybench): the per-message work every transport does — encode and
// decode a frame header, and push+pop one 32-byte frame through an shm ring (on a plain ArrayBuffer,
// so this is the JS cost of the ring without any cross-process cache traffic).
import { Bench } from "tinybench";
import { FrameKind, newFrameHeader, readFrameHeader, writeFrameHeader } from "../../runtime/rpc/frame.ts";
import type { BenchRow } from "./rows.ts";

function row(name: string, nsPerOp: number, p99Ns: number, samples: number): BenchRow {
  return {
    name,
    transport: "in-process",
    mode: "micro",
    payload_bytes: 32,
    median_us: nsPerOp / 1000,
    p99_us: p99Ns / 1000,
    calls_per_s: Math.round(1e9 / nsPerOp),
    cpu_us_per_call: nsPerOp / 1000,
    iterations: samples,
    ns_per_op: Math.round(nsPerOp * 10) / 10,
  };
}

/** Runs each task in batches of BATCH operations: one tinybench sample per batch keeps timer overhead out. */
const BATCH = 1000;

async function ringTask(): Promise<(() => void) | string> {
  let ring: typeof import("../../runtime/transport/shm/ring.ts");
  try {
    ring = await import("../../runtime/transport/shm/ring.ts");
  } catch (e) {
    return `shm ring module not available: ${(e as Error).message}`;
  }
  const capacity = 1 << 16;
  const buf = new ArrayBuffer(ring.RING_CONTROL_BYTES + capacity);
  const writer = new ring.RingWriter(buf, 0, ring.RING_CONTROL_BYTES, capacity);
  const reader = new ring.RingReader(buf, 0, ring.RING_CONTROL_BYTES, capacity, 4 * 1024 * 1024);
  const body = new Uint8Array(32).fill(7);
  let seen = 0;
  const sink = { onFrame: (_k: number, _f: number, _c: number, _a: number, b: Uint8Array) => void (seen += b.length) };
  return () => {
    for (let i = 0; i < BATCH; i++) {
      if (!writer.writeFrame(FrameKind.MESSAGE, 0, i, 0, body)) throw new Error("ring full in a push/pop loop");
      reader.poll(sink, 1);
    }
    if (seen === 0) throw new Error("ring delivered nothing");
  };
}

export async function runMicro(quick: boolean, onRow: (r: BenchRow) => void): Promise<string[]> {
  const notes: string[] = [];
  const bench = new Bench({ time: quick ? 150 : 600, warmupTime: quick ? 50 : 150 });
  const view = new DataView(new ArrayBuffer(64));
  const hdr = newFrameHeader();
  let sinkValue = 0;
  bench.add("frame header encode", () => {
    for (let i = 0; i < BATCH; i++) writeFrameHeader(view, 0, 32, FrameKind.MESSAGE, 0, i, 0);
  });
  bench.add("frame header decode", () => {
    for (let i = 0; i < BATCH; i++) sinkValue += readFrameHeader(view, 0, 4 << 20, hdr).callId;
  });
  const ring = await ringTask();
  if (typeof ring === "string") notes.push(ring);
  else bench.add("shm ring push+pop 32 B", ring);
  await bench.run();
  for (const task of bench.tasks) {
    const r = task.result as unknown as { state?: string; error?: Error; latency?: { p50?: number; p99?: number; samplesCount?: number } };
    if (r.error || !r.latency?.p50) {
      notes.push(`${task.name}: ${r.error?.message ?? "no result"}`);
      continue;
    }
    // tinybench latencies are milliseconds per batch.
    onRow(row(task.name, (r.latency.p50 * 1e6) / BATCH, ((r.latency.p99 ?? r.latency.p50) * 1e6) / BATCH, (r.latency.samplesCount ?? 0) * BATCH));
  }
  if (sinkValue < 0) notes.push("unreachable");
  return notes;
}
