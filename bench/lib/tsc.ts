// The TSC from Bun, through a one-line C function called with bun:ffi (bench/c/tsc.c): the Bun one-way
// rows then use the very clock and fences the C rows use, so their cycle counts compare directly.
// An FFI call that returns a double costs a few ns; the value is exact (TSC < 2^53).
import { dlopen, FFIType } from "bun:ffi";

export function openTsc(libPath: string): () => number {
  const lib = dlopen(libPath, { bench_tsc: { args: [], returns: FFIType.f64 } });
  return lib.symbols.bench_tsc as () => number;
}

/** Sorted-sample statistics of TSC deltas, as the one-way rows report them. */
export interface CycleStats {
  count: number;
  mean: number;
  median: number;
  p99: number;
}

export function cycleStats(samples: Float64Array, count: number): CycleStats {
  const s = samples.subarray(0, count).sort();
  let sum = 0;
  for (let i = 0; i < count; i++) sum += s[i] ?? 0;
  const at = (q: number) => s[Math.min(count - 1, Math.floor(q * count))] ?? 0;
  return { count, mean: count ? sum / count : 0, median: at(0.5), p99: at(0.99) };
}
