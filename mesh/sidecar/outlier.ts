// Outlier detection: an endpoint that fails `consecutiveFailures` calls in a row is ejected from load
// balancing for base_ejection_ms × (times ejected so far), never ejecting more than
// max_ejection_percent of the endpoints, so a sick host is left alone while the rest carry the load.
import { Status } from "../../runtime/rpc/status.ts";
import type { Endpoint } from "./endpoint.ts";

export interface OutlierPolicy {
  consecutiveFailures: number;
  baseEjectionMs: number;
  maxEjectionPercent: number;
}

/** Codes that say "this host is unwell" rather than "this request was bad". */
export function isHostFailure(code: number): boolean {
  return code === Status.UNAVAILABLE || code === Status.INTERNAL || code === Status.UNKNOWN || code === Status.DATA_LOSS;
}

/** Longest a repeatedly ejected endpoint stays out, whatever the multiplier says. */
const MAX_EJECTION_MS = 300_000;

export class OutlierDetector {
  constructor(
    private readonly policy: OutlierPolicy,
    private readonly now: () => number = Date.now,
    private readonly onEject: (e: Endpoint, forMs: number) => void = () => {},
  ) {}

  isEjected(e: Endpoint): boolean {
    return e.ejectedUntil > this.now();
  }

  /** Records the outcome of one call to `e`; `all` is the endpoint set it belongs to. */
  record(e: Endpoint, code: number, all: readonly Endpoint[]): void {
    if (!isHostFailure(code)) {
      e.consecutiveFailures = 0;
      return;
    }
    e.consecutiveFailures++;
    if (e.consecutiveFailures < this.policy.consecutiveFailures || this.isEjected(e)) return;
    const now = this.now();
    let ejected = 0;
    for (const x of all) if (x.ejectedUntil > now) ejected++;
    const maxEjected = Math.floor((all.length * this.policy.maxEjectionPercent) / 100);
    if (ejected + 1 > maxEjected) return;
    e.ejections++;
    const forMs = Math.min(MAX_EJECTION_MS, this.policy.baseEjectionMs * e.ejections);
    e.ejectedUntil = now + forMs;
    e.consecutiveFailures = 0;
    this.onEject(e, forMs);
  }

  /**
   * Fills `out` (reused) with the endpoints that may take traffic. When every endpoint is ejected
   * (cannot happen below 100% but guard anyway) all of them are returned: some traffic beats none.
   */
  healthy(all: readonly Endpoint[], out: Endpoint[]): Endpoint[] {
    out.length = 0;
    const now = this.now();
    for (const e of all) if (e.ejectedUntil <= now) out.push(e);
    if (out.length === 0) for (const e of all) out.push(e);
    return out;
  }
}
