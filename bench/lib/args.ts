// Command-line options of `bun run bench`. Unknown flags and bad values fail with a message that says
// what is accepted, never a stack trace.
import { parseArgs } from "node:util";
import type { Placement } from "./rows.ts";

/** "floor": the RPC layer alone, client and server in one process with no IPC (lib/rpc-floor.ts). */
export const SELECTABLE = ["c", "c-uds", "c-pipe", "c-shm-spin", "uds", "shm", "rpal", "floor", "micro"] as const;
export type Selectable = (typeof SELECTABLE)[number];

export interface BenchOptions {
  json: boolean;
  quick: boolean;
  /** The seed's 1,000,000 one-way messages on every transport (slow: the C Unix socket alone takes ~35 s here). */
  full: boolean;
  only: Set<Selectable> | undefined;
  /** Overrides the per-row placement when set. */
  placement: Placement | undefined;
}

export class UsageError extends Error {
  override name = "UsageError";
}

export const USAGE = `usage: bun run bench [-- options]
  --json              print only a JSON array, one row per measurement
  --quick             small counts (under ~30 s): a smoke run, not figures to quote
  --full              the seed's 1,000,000 one-way messages for every transport (adds minutes)
  --only LIST         comma-separated subset of: ${SELECTABLE.join(", ")}
                      ("c" = every C reference; the references a selected row is compared with always run;
                       "floor" = the RPC layer alone, in one process with no IPC: no C reference)
  --placement P       same-cpu | apart | unpinned: run every row with that placement
                      (default: blocking transports pinned to one CPU, spinning ones to two)
  --help`;

export function parseBenchArgs(argv: string[]): BenchOptions | "help" {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        json: { type: "boolean", default: false },
        quick: { type: "boolean", default: false },
        full: { type: "boolean", default: false },
        only: { type: "string" },
        placement: { type: "string" },
        help: { type: "boolean", default: false },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (e) {
    throw new UsageError(`${(e as Error).message}\n${USAGE}`);
  }
  const v = parsed.values;
  if (v.help) return "help";
  if (v.quick && v.full) throw new UsageError("--quick and --full contradict each other: pick one");
  let only: Set<Selectable> | undefined;
  if (v.only !== undefined) {
    const names = v.only.split(",").map((s) => s.trim()).filter(Boolean);
    if (names.length === 0) throw new UsageError(`--only needs at least one of: ${SELECTABLE.join(", ")}`);
    for (const n of names) {
      if (!(SELECTABLE as readonly string[]).includes(n)) {
        throw new UsageError(`--only: unknown name '${n}'; accepted: ${SELECTABLE.join(", ")}`);
      }
    }
    only = new Set(names as Selectable[]);
  }
  let placement: Placement | undefined;
  if (v.placement !== undefined) {
    if (!["same-cpu", "apart", "unpinned"].includes(v.placement)) {
      throw new UsageError(`--placement must be same-cpu, apart or unpinned, got '${v.placement}'`);
    }
    placement = v.placement as Placement;
  }
  return { json: v.json ?? false, quick: v.quick ?? false, full: v.full ?? false, only, placement };
}

/** Whether rows of `name` run: selected directly, through "c", or because a selected Bun row is compared with it. */
export function selected(opts: BenchOptions, name: Selectable): boolean {
  const only = opts.only;
  if (!only) return true;
  if (only.has(name)) return true;
  if (name.startsWith("c-") && only.has("c")) return true;
  const bunRows = only.has("uds") || only.has("shm") || only.has("rpal");
  if (bunRows && (name === "c-uds" || name === "c-shm-spin")) return true;
  return false;
}
