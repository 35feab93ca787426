import { describe, expect, test } from "bun:test";
import type { BenchRow } from "./rows.ts";
import { attachRatios } from "./rows.ts";
import { checkTargets } from "./targets.ts";

function row(p: Partial<BenchRow> & Pick<BenchRow, "transport" | "mode">): BenchRow {
  return { name: p.transport, payload_bytes: 32, median_us: null, p99_us: null, calls_per_s: null, cpu_us_per_call: null, iterations: 1, ...p };
}

const verdict = (rows: BenchRow[], start: string) => checkTargets(rows).find((t) => t.target.startsWith(start));

describe("issue targets", () => {
  test("uds within 3× of C is met, beyond is a miss; missing rows are 'not measured'", () => {
    const c = row({ transport: "c-uds", mode: "closed-loop", median_us: 10, cpu_us_per_call: 10 });
    expect(verdict([c, row({ transport: "uds", mode: "closed-loop", median_us: 29, cpu_us_per_call: 31 })], "uds round trip")?.met).toBe(true);
    expect(verdict([c, row({ transport: "uds", mode: "closed-loop", median_us: 29, cpu_us_per_call: 31 })], "uds CPU")?.met).toBe(false);
    expect(verdict([c], "uds round trip")?.measured).toBe("not measured");
  });

  test("fixed rate: shm behind where uds kept up is a miss; uds behind gives no verdict", () => {
    const u = row({ transport: "uds", mode: "fixed-rate", target_calls_per_s: 50_000, cpu_ms_per_1000_calls: 10, calls_per_s: 50_000 });
    const s = row({ transport: "shm", mode: "fixed-rate", target_calls_per_s: 50_000, cpu_ms_per_1000_calls: 2, calls_per_s: 50_000 });
    expect(verdict([u, s], "shm CPU per 1,000 calls at 50k")?.met).toBe(true);
    expect(verdict([u, { ...s, note: "could not sustain" }], "shm CPU per 1,000 calls at 50k")?.met).toBe(false);
    expect(verdict([{ ...u, note: "could not sustain" }, s], "shm CPU per 1,000 calls at 50k")?.met).toBeUndefined();
  });

  test("the one-way target reads the spinning shm transport-message row's mean cycles against 1,703", () => {
    const ow = row({ transport: "shm", mode: "one-way", spin: "auto", level: "transport", cycles_one_way: 1500, cycles_one_way_median: 900, cpu_us_per_call: 2 });
    const rpc = row({ transport: "shm", mode: "one-way", spin: "100", cycles_one_way: 2600, cycles_one_way_median: 2300, cpu_us_per_call: 3 });
    expect(verdict([rpc, ow], "shm one-way")?.met).toBe(true);
    expect(verdict([rpc, { ...ow, cycles_one_way: 2000 }], "shm one-way")?.met).toBe(false);
    // The unary-RPC row is printed beside the verdict, never judged in place of the message row.
    expect(verdict([rpc, ow], "shm one-way")?.measured).toContain("as a unary RPC, spin 100: 2,600 cycles");
    expect(verdict([rpc], "shm one-way")?.met).toBeUndefined();
  });

  test("the shm ≤ 1/4 of uds line prints the RPC floor and what it implies; the verdict stays on the measured ratio", () => {
    const u = row({ transport: "uds", mode: "pipelined", in_flight: 64, cpu_us_per_call: 1.63 });
    const s = row({ transport: "shm", mode: "pipelined", in_flight: 64, spin: "off", cpu_us_per_call: 1.55 });
    const floor = row({ transport: "floor", mode: "pipelined", level: "rpc-floor", in_flight: 64, cpu_us_per_call: 1.2 });
    const without = verdict([u, s], "shm pipelined CPU");
    expect(without?.measured).toBe("1.55 vs 1.63 µs = 0.95×");
    const withFloor = verdict([u, s, floor], "shm pipelined CPU");
    expect(withFloor?.met).toBe(false);
    expect(withFloor?.measured).toBe(
      "1.55 vs 1.63 µs = 0.95×; the RPC layer alone (no IPC) costs 1.20 µs = 0.74× uds, leaving uds 0.43 and shm 0.35 µs above it: no transport can reach 1/4 here",
    );
    // A floor under a quarter of uds says how much room it leaves; a shm at 1/4 is still judged met on its own figure.
    const cheap = verdict([u, { ...s, cpu_us_per_call: 0.4 }, { ...floor, cpu_us_per_call: 0.2 }], "shm pipelined CPU");
    expect(cheap?.met).toBe(true);
    expect(cheap?.measured).toContain("costs 0.20 µs = 0.12× uds");
    expect(cheap?.measured).toContain("1/4 of uds (0.41 µs) leaves a transport 0.21 µs per call above the floor");
    // The floor's closed-loop row is not the pipelined floor; and the floor alone gives no verdict.
    expect(verdict([u, s, { ...floor, mode: "closed-loop" }], "shm pipelined CPU")?.measured).toBe("1.55 vs 1.63 µs = 0.95×");
    expect(verdict([floor], "shm pipelined CPU")?.measured).toBe("not measured");
  });

  test("the RPC floor rows get no C ratio", () => {
    const rows = [
      row({ transport: "c-uds", mode: "closed-loop", median_us: 10, cpu_us_per_call: 8 }),
      row({ transport: "floor", mode: "pipelined", level: "rpc-floor", cpu_us_per_call: 1.2 }),
    ];
    attachRatios(rows);
    expect(rows[1]!.ref).toBeUndefined();
    expect(rows[1]!.ratio_cpu).toBeUndefined();
  });

  test("ratios divide by the reference of the same kind; rpal-double rows are compared with c-uds", () => {
    const rows = [
      row({ transport: "c-uds", mode: "closed-loop", median_us: 10, cpu_us_per_call: 8 }),
      row({ transport: "c-shm-spin", mode: "one-way", cycles_one_way: 200, cpu_us_per_call: 1 }),
      row({ transport: "rpal-double", mode: "closed-loop", median_us: 25, cpu_us_per_call: 16 }),
      row({ transport: "shm", mode: "one-way", spin: "100", cycles_one_way: 2000, cpu_us_per_call: 3 }),
    ];
    attachRatios(rows);
    expect(rows[2]).toMatchObject({ ref: "c-uds closed-loop", ratio_median: 2.5, ratio_cpu: 2 });
    expect(rows[3]).toMatchObject({ ref: "c-shm-spin one-way", ratio_median: 10, ratio_cpu: 3 });
  });
});
