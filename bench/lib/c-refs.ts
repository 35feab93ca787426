// The C reference rows: what a round trip and a one-way message cost at the floor of this machine,
// measured in the same run as the Bun rows they are divided by.
import { buildC } from "./build-c.ts";
import { cEnv, cpusFor } from "./placement.ts";
import type { BenchRow, Placement } from "./rows.ts";
import { spawnJson } from "./spawn-json.ts";
import type { BenchOptions, Selectable } from "./args.ts";
import { selected } from "./args.ts";

type CResult = Omit<BenchRow, "name" | "placement">;

interface CRun {
  select: Selectable;
  name: string;
  program: "pingpong" | "oneway";
  mode: string;
  placement: Placement;
  iterations: { quick: number; normal: number; full: number };
}

const RUNS: CRun[] = [
  { select: "c-uds", name: "C Unix socket ping-pong", program: "pingpong", mode: "uds", placement: "same-cpu", iterations: { quick: 10_000, normal: 100_000, full: 100_000 } },
  { select: "c-pipe", name: "C pipe ping-pong", program: "pingpong", mode: "pipe", placement: "same-cpu", iterations: { quick: 10_000, normal: 100_000, full: 100_000 } },
  { select: "c-shm-spin", name: "C shm busy-poll ping-pong", program: "pingpong", mode: "shm-spin", placement: "apart", iterations: { quick: 200_000, normal: 1_000_000, full: 1_000_000 } },
  // The seed's method. Its baseline contains a cross-CPU wake-up (RPAL.md), so the pair runs apart.
  { select: "c-uds", name: "C epoll+Unix socket one-way (seed method)", program: "oneway", mode: "uds", placement: "apart", iterations: { quick: 5_000, normal: 100_000, full: 1_000_000 } },
  { select: "c-shm-spin", name: "C shm busy-poll one-way (seed method)", program: "oneway", mode: "shm", placement: "apart", iterations: { quick: 200_000, normal: 1_000_000, full: 1_000_000 } },
];

export async function runCReferences(opts: BenchOptions, onRow: (r: BenchRow) => void): Promise<void> {
  for (const run of RUNS) {
    if (!selected(opts, run.select)) continue;
    const exe = buildC(run.program);
    const cpus = cpusFor(opts.placement ?? run.placement);
    const n = opts.quick ? run.iterations.quick : opts.full ? run.iterations.full : run.iterations.normal;
    const maxSeconds = opts.quick ? 3 : opts.full ? 600 : 10;
    const res = await spawnJson<CResult>([exe, run.mode, String(n), String(maxSeconds)], { env: cEnv(cpus), timeoutMs: (maxSeconds + 60) * 1000 });
    if (res.iterations < n) res.note = `time limit: ${res.iterations} of ${n} messages in ${maxSeconds} s (machine busy?)`;
    onRow({ name: run.name, placement: cpus.placement, ...res });
  }
}
