// Retry policy pieces: which codes are retryable, exponential backoff with full jitter, and a retry
// budget that caps retries to a share of recent requests so retries cannot multiply an overload.
import { Status } from "../../runtime/rpc/status.ts";

export interface RetryPolicy {
  maxAttempts: number;
  retryOn: ReadonlySet<number>;
  baseBackoffMs: number;
  maxBackoffMs: number;
  budgetPercent: number;
  minRetriesPerSecond: number;
}

/** Converts mesh.yaml's `retries` block (status names) to the policy the router uses. */
export function retryPolicyFromConfig(r: {
  max_attempts: number;
  retry_on: readonly string[];
  base_backoff_ms: number;
  max_backoff_ms: number;
  budget_percent: number;
  min_retries_per_second: number;
}): RetryPolicy {
  const codes = new Set<number>();
  for (const name of r.retry_on) {
    const code = (Status as Record<string, number>)[name];
    if (code === undefined || code === Status.OK) throw new Error(`retry_on: "${name}" is not a retryable gRPC status name`);
    codes.add(code);
  }
  return {
    maxAttempts: r.max_attempts,
    retryOn: codes,
    baseBackoffMs: r.base_backoff_ms,
    maxBackoffMs: r.max_backoff_ms,
    budgetPercent: r.budget_percent,
    minRetriesPerSecond: r.min_retries_per_second,
  };
}

/**
 * Delay before retry number `retry` (1 = first retry): "full jitter" — uniform in
 * [0, min(max, base * 2^(retry-1))] — which spreads synchronized clients apart best.
 */
export function backoffMs(policy: RetryPolicy, retry: number, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.maxBackoffMs, policy.baseBackoffMs * 2 ** Math.min(retry - 1, 30));
  return Math.floor(random() * (ceiling + 1));
}

const WINDOW_SECONDS = 10;

/**
 * Allows a retry while retries in the last WINDOW_SECONDS stay under
 * `minRetriesPerSecond * window + budgetPercent% of requests` in that window (Linkerd's and Envoy's
 * idea). Counts live in one-second buckets in fixed arrays: no allocation per request.
 */
export class RetryBudget {
  private readonly requests = new Float64Array(WINDOW_SECONDS);
  private readonly retries = new Float64Array(WINDOW_SECONDS);
  private readonly stamps = new Float64Array(WINDOW_SECONDS);

  constructor(
    private readonly budgetPercent: number,
    private readonly minRetriesPerSecond: number,
    private readonly now: () => number = Date.now,
  ) {}

  private bucket(): number {
    const sec = Math.floor(this.now() / 1000);
    const i = sec % WINDOW_SECONDS;
    if (this.stamps[i] !== sec) {
      this.stamps[i] = sec;
      this.requests[i] = 0;
      this.retries[i] = 0;
    }
    return i;
  }

  private sums(): { requests: number; retries: number } {
    const sec = Math.floor(this.now() / 1000);
    let requests = 0;
    let retries = 0;
    for (let i = 0; i < WINDOW_SECONDS; i++) {
      if (sec - this.stamps[i]! < WINDOW_SECONDS) {
        requests += this.requests[i]!;
        retries += this.retries[i]!;
      }
    }
    return { requests, retries };
  }

  /** Records an original request (not a retry). */
  recordRequest(): void {
    this.requests[this.bucket()]!++;
  }

  /** True and records the retry when the budget allows one more; false otherwise. */
  tryRetry(): boolean {
    const { requests, retries } = this.sums();
    const allowed = this.minRetriesPerSecond * WINDOW_SECONDS + (requests * this.budgetPercent) / 100;
    if (retries + 1 > allowed) return false;
    this.retries[this.bucket()]!++;
    return true;
  }
}
