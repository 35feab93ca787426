import { describe, expect, test } from "bun:test";
import { confidenceInterval95, mean, pairedSaving, sampleStddev } from "./stats.ts";

describe("confidenceInterval95", () => {
  test("matches a hand-computed t-interval (n=3, t(0.975,2)=4.3027)", () => {
    const ci = confidenceInterval95([10, 12, 14]);
    expect(ci.mean).toBe(12);
    expect(ci.stddev).toBeCloseTo(2, 12);
    const half = 4.302652729749462 * (2 / Math.sqrt(3));
    expect(ci.low!).toBeCloseTo(12 - half, 9);
    expect(ci.high!).toBeCloseTo(12 + half, 9);
  });

  test("narrows towards the normal 1.96 with many values", () => {
    const values = Array.from({ length: 1000 }, (_, i) => (i % 2 ? 1 : -1));
    const ci = confidenceInterval95(values);
    const sd = sampleStddev(values)!;
    expect((ci.high! - ci.mean) / (sd / Math.sqrt(1000))).toBeCloseTo(1.962, 2);
  });

  test("one value has a mean but no interval", () => {
    const ci = confidenceInterval95([5]);
    expect(ci).toEqual({ mean: 5, low: null, high: null, n: 1, stddev: null });
  });

  test("no values give NaN, not a crash", () => {
    expect(Number.isNaN(confidenceInterval95([]).mean)).toBe(true);
    expect(Number.isNaN(mean([]))).toBe(true);
  });
});

describe("pairedSaving", () => {
  test("a consistent 20% saving is significant", () => {
    const s = pairedSaving([1.0, 1.1, 0.9], [0.8, 0.87, 0.73]);
    expect(s.pairs).toBe(3);
    expect(s.fraction.mean).toBeCloseTo(0.2, 1);
    expect(s.fraction.low!).toBeGreaterThan(0);
    expect(s.significant).toBe(true);
    expect(s.absolute.mean).toBeCloseTo((0.2 + 0.23 + 0.17) / 3, 9);
  });

  test("noise that crosses zero is marked not significant", () => {
    const s = pairedSaving([1.0, 1.0, 1.0], [0.8, 1.2, 1.01]);
    expect(s.fraction.low!).toBeLessThan(0);
    expect(s.fraction.high!).toBeGreaterThan(0);
    expect(s.significant).toBe(false);
  });

  test("a consistent loss is significant with a negative saving", () => {
    const s = pairedSaving([1, 1, 1], [1.5, 1.52, 1.48]);
    expect(s.fraction.high!).toBeLessThan(0);
    expect(s.significant).toBe(true);
  });

  test("failed reps (undefined/NaN) drop their pair instead of skewing the mean", () => {
    const s = pairedSaving([1, undefined, 1, 1], [0.5, 0.1, Number.NaN, 0.5]);
    expect(s.pairs).toBe(2);
    expect(s.fraction.mean).toBeCloseTo(0.5, 12);
  });

  test("a single pair cannot be significant", () => {
    const s = pairedSaving([1], [0.5]);
    expect(s.fraction.low).toBeNull();
    expect(s.significant).toBe(false);
  });
});
