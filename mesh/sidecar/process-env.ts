// Environment settings `mesh up` gives every sidecar process (bench-mesh and the `mesh k8s` manifests use
// the same, so they measure and deploy what `mesh up` runs). A value the user's environment already sets
// is left alone, so each can be turned back (e.g. BUN_JSC_useFTLJIT=1).
//
// BUN_JSC_forceRAMSize: JavaScriptCore sizes how far its heap may grow between collections from the
// machine's RAM. On a 24 GiB node the sidecar's heap (8-9 MB live) swelled by ~7 MB before each full
// collection; sized as a 512 MB pod it does not. Measured with bench-mesh at 1,000 rps, 7 default runs
// against 6 with the setting (128 MB-1 GB behaved alike): RSS maximum over the measured windows 73.5 /
// 71.6 -> 66.5 / 65.4 MB (frontend / greeter), median -1.0 / -0.6 MB, CPU unchanged (0.097 / 0.098 ->
// 0.096 / 0.097 vCPU per 1k rps). It changes only when the GC runs, never how much a process may
// allocate. Other JSC heap options (smallHeapGrowthFactor, smallHeapRAMFraction, minHeapUtilization,
// gcMaxHeapSize) changed nothing in Bun 1.4.5; MIMALLOC_PURGE_DELAY 0 or 100 changed nothing either.
//
// BUN_JSC_useFTLJIT=0: JSC's fourth tier (FTL, the B3/Air optimising backend) stays off; functions run in
// the DFG tier at most. Compiling even a few hot functions with FTL touches ~2 MB more of the bun
// executable and keeps ~2-4 MB of compiler and code memory. A sidecar's proxy path is short and mostly
// waits on the kernel, so the DFG code is nearly as fast: in 3 alternating pairs of bench-mesh runs at
// 1,000 rps, RSS median 63.3-66.2 -> 58.7-61.0 MB and CPU 0.093-0.102 -> 0.092-0.110 vCPU per 1k rps
// (means 0.0985 vs 0.0993: within the runs' spread). The DFG tier off as well (useDFGJIT=0) doubles CPU.
export const SIDECAR_JSC_RAM_BYTES = 512 * 1024 * 1024;

/** The settings to add to `base` (the environment a sidecar would otherwise get) for a sidecar process. */
export function sidecarProcessEnv(base: Readonly<Record<string, string | undefined>>): Record<string, string> {
  const out: Record<string, string> = {};
  if (!base.BUN_JSC_forceRAMSize) out.BUN_JSC_forceRAMSize = String(SIDECAR_JSC_RAM_BYTES);
  if (!base.BUN_JSC_useFTLJIT) out.BUN_JSC_useFTLJIT = "0";
  return out;
}
