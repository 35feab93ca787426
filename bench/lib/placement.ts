// Where the two processes of a measurement run. On a 2-vCPU VM an unpinned pair lands either on one
// CPU (a wake-up is a cheap local switch) or on two (a wake-up of an idle vCPU costs 15–35 µs), and
// the figures jump between those two modes from run to run. So each row is pinned on purpose:
// blocking transports to one CPU, spinning ones to two (a spinner sharing its CPU with its peer only
// burns the peer's time slice), and the row says which.
import { availableParallelism } from "node:os";
import type { Placement } from "./rows.ts";

export interface Cpus {
  client: number | undefined;
  server: number | undefined;
  /** What actually happened: "apart" needs two CPUs and falls back to unpinned without them. */
  placement: Placement;
}

export function cpusFor(placement: Placement): Cpus {
  const n = availableParallelism();
  if (placement === "same-cpu") return { client: 0, server: 0, placement };
  if (placement === "apart" && n >= 2) return { client: 0, server: 1, placement };
  return { client: undefined, server: undefined, placement: "unpinned" };
}

/** Environment for the C programs (they pin themselves after fork). */
export function cEnv(c: Cpus): Record<string, string> {
  return c.client === undefined || c.server === undefined ? {} : { BENCH_CPUS: `${c.client},${c.server}` };
}

let tasksetPath: string | null | undefined;

/** Command prefix that pins a Bun process to `cpu` (taskset), or nothing if unpinned or taskset is missing. */
export function pinPrefix(cpu: number | undefined): string[] {
  if (cpu === undefined) return [];
  if (tasksetPath === undefined) tasksetPath = Bun.which("taskset");
  if (!tasksetPath) throw new Error("taskset not found (package util-linux): install it or run with --placement unpinned");
  return [tasksetPath, "-c", String(cpu)];
}
