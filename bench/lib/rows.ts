// One measurement = one row. The JSON output is an array of these; the table is drawn from them.
export type Mode = "closed-loop" | "pipelined" | "fixed-rate" | "one-way" | "micro";
export type Placement = "same-cpu" | "apart" | "unpinned";

export interface BenchRow {
  name: string;
  /**
   * uds, shm, rpal, rpal-double; references c-uds, c-pipe, c-shm-spin; "in-process" for microbenchmarks;
   * "floor" for the RPC floor rows (level "rpc-floor").
   */
  transport: string;
  mode: Mode;
  payload_bytes: number;
  median_us: number | null;
  p99_us: number | null;
  calls_per_s: number | null;
  /** CPU time of BOTH processes (client + server) per call, µs. */
  cpu_us_per_call: number | null;
  client_cpu_us_per_call?: number;
  server_cpu_us_per_call?: number;
  /** Measured calls (or messages for one-way rows). */
  iterations: number;
  /** Where the two processes ran: pinned to one CPU, pinned to two different CPUs, or left to the scheduler. */
  placement?: Placement;
  in_flight?: number;
  /** shm spin setting the row ran with. */
  spin?: string;
  /** one-way rows: mean TSC cycles send→receive (the seed's figure), plus median and p99. */
  cycles_one_way?: number;
  cycles_one_way_median?: number;
  cycles_one_way_p99?: number;
  tsc_hz?: number;
  /**
   * one-way rows: "transport" = a frame through the transport API alone, no RPC on top (what RPAL's
   * published figure measures); absent = a unary RPC through the channel (the seed method's Bun row).
   * "rpc-floor" (transport "floor"): the real RpcChannel client and server in ONE process over an
   * in-memory pair (bench/lib/memory-transport.ts), no IPC: what the RPC layer costs by itself, a lower
   * bound of every transport's CPU per call. cpu_us_per_call is that process's, all threads.
   */
  level?: "transport" | "rpc-floor";
  /** one-way rows: median_us/p99_us are one-way (from cycles); this is the round trip the client saw. */
  round_trip_median_us?: number;
  /** fixed-rate rows: the offered rate, and CPU (both processes) per 1,000 calls in ms and in vCPU at that rate. */
  target_calls_per_s?: number;
  cpu_ms_per_1000_calls?: number;
  vcpu_at_rate?: number;
  /** The same minus the idle baseline row (ticker + idle session) of the same processes. */
  cpu_ms_per_1000_calls_net?: number;
  syscalls_per_call?: number;
  /** perf (raw_syscalls:sys_enter), strace -c -f, or proc-io (read/write syscalls only: a lower bound). */
  syscalls_method?: string;
  /** perf only: the commonest syscalls per call, by name. */
  syscalls_top?: Record<string, number>;
  ctx_switches_per_call?: number;
  /** The C reference this row is compared with, measured in the same run, and the ratios (this / reference). */
  ref?: string;
  ratio_median?: number;
  ratio_cpu?: number;
  /** Microbenchmarks: nanoseconds per operation. */
  ns_per_op?: number;
  /** /proc/loadavg (1 min) when the row finished: above the CPU count, other work shared the machine. */
  load_avg_1m?: number;
  note?: string;
}

export const REFERENCE_TRANSPORTS = ["c-uds", "c-pipe", "c-shm-spin"] as const;

function ratio(a: number | null | undefined, b: number | null | undefined): number | undefined {
  if (a == null || b == null || !(b > 0)) return undefined;
  return Math.round((a / b) * 100) / 100;
}

/**
 * The reference each Bun row is divided by: the C program that does the same job at the floor.
 * uds and a parked shm are compared with the C Unix socket (what the app↔sidecar hop costs today);
 * a spinning shm with the spinning C shared memory; one-way rows with the C one-way row of the same kind.
 */
export function referenceFor(row: BenchRow): { transport: string; mode: Mode } | undefined {
  // The RPC floor is not a transport: it is compared with the uds/shm rows (targets.ts), not with C.
  if (row.transport.startsWith("c-") || row.mode === "micro" || row.level === "rpc-floor") return undefined;
  const spinning = row.spin !== undefined && row.spin !== "off";
  const ref = spinning ? "c-shm-spin" : "c-uds";
  if (row.mode === "one-way") return { transport: ref, mode: "one-way" };
  // C has no pipelined or fixed-rate run: the closed-loop round trip is its floor for all of them.
  return { transport: ref, mode: "closed-loop" };
}

export function attachRatios(rows: BenchRow[]): void {
  for (const row of rows) {
    const want = referenceFor(row);
    if (!want) continue;
    const ref = rows.find((r) => r.transport === want.transport && r.mode === want.mode);
    if (!ref) continue;
    const med = row.mode === "one-way" ? ratio(row.cycles_one_way, ref.cycles_one_way) : ratio(row.median_us, ref.median_us);
    const cpu = ratio(row.cpu_us_per_call, ref.cpu_us_per_call);
    if (med !== undefined && row.mode !== "pipelined" && row.mode !== "fixed-rate") row.ratio_median = med;
    if (cpu !== undefined) row.ratio_cpu = cpu;
    if (row.ratio_median !== undefined || row.ratio_cpu !== undefined) row.ref = `${ref.transport} ${ref.mode}`;
  }
}
