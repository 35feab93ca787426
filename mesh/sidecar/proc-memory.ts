// A process's resident memory from /proc, in MB, for the sidecar benchmarks (bench-mesh.ts and
// bench-h2-floor.ts report the same parts, so their figures compare).
import { readFileSync } from "node:fs";

function kbField(text: string, key: string): number {
  return Number(new RegExp(`^${key}:\\s+(\\d+)`, "m").exec(text)?.[1] ?? NaN) / 1024;
}

/** Resident set size and its anonymous and file-backed parts (MB), from /proc/<pid>/status. */
export function rssParts(pid: number): { rssMB: number; anonMB: number; fileMB: number } {
  const text = readFileSync(`/proc/${pid}/status`, "utf8");
  return { rssMB: kbField(text, "VmRSS"), anonMB: kbField(text, "RssAnon"), fileMB: kbField(text, "RssFile") };
}

/** Proportional set size by kind (MB), from /proc/<pid>/smaps_rollup; NaN where the kernel has none. */
export function pssParts(pid: number): { pssMB: number; pssAnonMB: number; pssFileMB: number; pssShmemMB: number } {
  let text = "";
  try {
    text = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  } catch {
    // no smaps_rollup (kernel < 4.14) or no permission
  }
  return { pssMB: kbField(text, "Pss"), pssAnonMB: kbField(text, "Pss_Anon"), pssFileMB: kbField(text, "Pss_File"), pssShmemMB: kbField(text, "Pss_Shmem") };
}
