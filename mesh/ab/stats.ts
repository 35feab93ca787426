// Statistics for the A/B report: means and 95% confidence intervals across repetitions (Student's t,
// because a harness runs 2–10 reps, far too few for a normal approximation), and the paired saving of a
// transport against the baseline. Reps are paired because the harness interleaves A B A B: rep r of
// every transport ran under the same drift, so per-rep differences cancel it.
import tQuantile from "@stdlib/stats-base-dists-t-quantile";

export interface Interval {
  mean: number;
  /** Bounds of the 95% confidence interval; null when fewer than two values exist. */
  low: number | null;
  high: number | null;
  n: number;
  stddev: number | null;
}

export function mean(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  let s = 0;
  for (const v of values) s += v;
  return s / values.length;
}

/** Sample standard deviation (n - 1); null below two values. */
export function sampleStddev(values: readonly number[]): number | null {
  if (values.length < 2) return null;
  const m = mean(values);
  let ss = 0;
  for (const v of values) ss += (v - m) * (v - m);
  return Math.sqrt(ss / (values.length - 1));
}

/** Two-sided 95% interval of the mean with the t distribution on n - 1 degrees of freedom. */
export function confidenceInterval95(values: readonly number[]): Interval {
  const n = values.length;
  const m = mean(values);
  const sd = sampleStddev(values);
  if (sd === null) return { mean: m, low: null, high: null, n, stddev: null };
  const half = tQuantile(0.975, n - 1) * (sd / Math.sqrt(n));
  return { mean: m, low: m - half, high: m + half, n, stddev: sd };
}

export interface Saving {
  /** Mean per-rep saving as a fraction of the baseline: 0.2 = uses 20% less CPU per request. */
  fraction: Interval;
  /** Mean per-rep difference baseline − candidate in vCPU per 1,000 rps. */
  absolute: Interval;
  /** true when the 95% interval of the fraction excludes 0; false when it crosses 0 or cannot be computed. */
  significant: boolean;
  pairs: number;
}

/**
 * Saving of `candidate` against `baseline`, both indexed by rep (NaN or missing entries are runs that
 * failed: their pair is dropped, never imputed).
 */
export function pairedSaving(baseline: readonly (number | undefined)[], candidate: readonly (number | undefined)[]): Saving {
  const fractions: number[] = [];
  const diffs: number[] = [];
  const n = Math.min(baseline.length, candidate.length);
  for (let i = 0; i < n; i++) {
    const b = baseline[i];
    const c = candidate[i];
    if (b === undefined || c === undefined || !Number.isFinite(b) || !Number.isFinite(c) || b <= 0) continue;
    fractions.push((b - c) / b);
    diffs.push(b - c);
  }
  const fraction = confidenceInterval95(fractions);
  const absolute = confidenceInterval95(diffs);
  const significant = fraction.low !== null && fraction.high !== null && (fraction.low > 0 || fraction.high < 0);
  return { fraction, absolute, significant, pairs: fractions.length };
}
