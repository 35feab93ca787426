// What run.ts tells the bench client process to do, and what it answers (one JSON line per job).
import type { CycleStats } from "./tsc.ts";

/** rpc-client.ts's transport for the RPC floor rows (lib/rpc-floor.ts): no server process, no IPC. */
export const FLOOR = "floor";

export type ClientJob =
  | { kind: "closed-loop"; iterations: number }
  | { kind: "pipelined"; iterations: number; inFlight: number }
  /** Pipelined, but waits for "go" on stdin first so run.ts can attach a syscall counter. */
  | { kind: "syscalls"; iterations: number; inFlight: number }
  | { kind: "fixed-rate"; rate: number; durationMs: number; iterations?: undefined }
  | { kind: "one-way"; iterations: number }
  /** One-way through the transport API alone, no RPC (bench/clients/message-client.ts). */
  | { kind: "message-one-way"; iterations: number };

export interface ClientSpec {
  socketPath: string;
  /** A transport name, or FLOOR: client and server channels in the client process, no IPC. */
  transport: string;
  /** Absent for FLOOR (the server runs inside the client process). */
  serverPid?: number;
  tscLib: string;
  /** Time limit of each measured job (warm-ups get a quarter of it); the job reports the calls it made. */
  maxJobMs: number;
  jobs: ClientJob[];
}

export interface ClientResult {
  kind: ClientJob["kind"];
  iterations: number;
  median_us: number;
  p99_us: number;
  calls_per_s: number;
  wall_ms: number;
  cpu_us_per_call: number;
  client_cpu_us_per_call: number;
  server_cpu_us_per_call: number;
  cpu_ns_total: number;
  ctx_switches_per_call: number;
  io_syscalls_per_call: number;
  in_flight?: number;
  /** fixed-rate: the offered rate (0 = idle baseline, no calls). */
  target_calls_per_s?: number;
  cycles?: CycleStats;
  tsc_hz?: number;
  round_trip_median_us?: number;
  /** fixed-rate: calls the open-loop client did not send because too many were outstanding. */
  skipped?: number;
  note?: string;
}
