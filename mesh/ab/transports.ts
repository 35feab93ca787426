// Which transports `mesh ab` compares: the ones asked for, or every one this machine can run (uds and
// shm always; rpal when runtime/transport/rpal/detect.ts finds the kernel, librpal and CPU support).
import { existsSync } from "node:fs";
import { join } from "node:path";
import { AbUsageError, type AbOptions, type TransportName } from "./flags.ts";

interface Availability {
  transports: TransportName[];
  notes: string[];
}

/** uds and shm work on any Linux; rpal only when runtime/transport/rpal/detect.ts says every precondition holds. */
async function availableTransports(): Promise<Availability> {
  const detectPath = join(import.meta.dir, "../../runtime/transport/rpal/detect.ts");
  if (!existsSync(detectPath)) return { transports: ["uds", "shm"], notes: ["rpal left out: runtime/transport/rpal/detect.ts is not in this checkout"] };
  try {
    const { detectRpal } = (await import(detectPath)) as typeof import("../../runtime/transport/rpal/detect.ts");
    const d = detectRpal();
    // `mesh up --transport rpal` runs the pods on an RPAL-marked copy of bun, so the harness's own
    // (unmarked) executable is not a reason to skip rpal.
    const failing = d.preconditions.filter((p) => !p.ok && p.name !== "executable");
    if (failing.length === 0) return { transports: ["uds", "shm", "rpal"], notes: [] };
    return { transports: ["uds", "shm"], notes: [`rpal left out: ${failing.map((p) => `${p.name}: ${p.detail}`).join("; ")}`] };
  } catch (e) {
    return { transports: ["uds", "shm"], notes: [`rpal left out: detection failed: ${(e as Error).message}`] };
  }
}

export async function chooseTransports(o: AbOptions): Promise<{ transports: TransportName[]; notes: string[] }> {
  const avail = await availableTransports();
  if (o.transports) {
    const missing = o.transports.filter((t) => !avail.transports.includes(t));
    if (missing.length) {
      throw new AbUsageError(`--transports ${missing.join(",")} cannot run on this machine (${avail.notes.join("; ")}); drop it from --transports`);
    }
    return { transports: o.transports, notes: [] };
  }
  if (!avail.transports.includes(o.baseline)) throw new AbUsageError(`--baseline ${o.baseline} cannot run here (${avail.notes.join("; ")}); pick --baseline uds`);
  let list = [o.baseline, ...avail.transports.filter((t) => t !== o.baseline)];
  if (o.quick) list = list.slice(0, 2);
  return { transports: list, notes: avail.notes };
}
