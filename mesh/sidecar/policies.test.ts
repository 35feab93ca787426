// Unit tests of the routing policies: balancer, retry backoff and budget, circuit breaker, outlier detection.
import { describe, expect, test } from "bun:test";
import { P2CLeastRequest, RoundRobin } from "./balancer.ts";
import { CircuitBreaker } from "./breaker.ts";
import { newEndpoint } from "./endpoint.ts";
import { OutlierDetector } from "./outlier.ts";
import { backoffMs, RetryBudget, retryPolicyFromConfig } from "./retry.ts";
import { RpcError, Status } from "../../runtime/rpc/status.ts";

describe("balancer", () => {
  test("round_robin visits every endpoint in turn", () => {
    const eps = ["a:1", "b:1", "c:1"].map(newEndpoint);
    const rr = new RoundRobin();
    const picks = Array.from({ length: 6 }, () => rr.pick(eps)!.address);
    expect(picks).toEqual(["a:1", "b:1", "c:1", "a:1", "b:1", "c:1"]);
    expect(rr.pick([])).toBeUndefined();
  });

  test("p2c_least_request prefers the endpoint with fewer calls in flight", () => {
    const eps = ["a:1", "b:1"].map(newEndpoint);
    eps[0]!.active = 10;
    const p2c = new P2CLeastRequest();
    for (let i = 0; i < 50; i++) expect(p2c.pick(eps)!.address).toBe("b:1");
  });

  test("p2c_least_request never picks the same index twice and spreads load", () => {
    const eps = ["a:1", "b:1", "c:1", "d:1"].map(newEndpoint);
    const p2c = new P2CLeastRequest();
    const counts = new Map<string, number>();
    for (let i = 0; i < 4000; i++) {
      const e = p2c.pick(eps)!;
      counts.set(e.address, (counts.get(e.address) ?? 0) + 1);
    }
    expect(counts.size).toBe(4);
  });
});

describe("retry", () => {
  const policy = retryPolicyFromConfig({
    max_attempts: 3,
    retry_on: ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
    base_backoff_ms: 25,
    max_backoff_ms: 100,
    budget_percent: 20,
    min_retries_per_second: 1,
  });

  test("retry_on names become codes", () => {
    expect([...policy.retryOn].sort()).toEqual([Status.RESOURCE_EXHAUSTED, Status.UNAVAILABLE].sort());
    expect(() => retryPolicyFromConfig({ ...{ max_attempts: 1, base_backoff_ms: 1, max_backoff_ms: 1, budget_percent: 1, min_retries_per_second: 1 }, retry_on: ["NOPE"] })).toThrow(/NOPE/);
  });

  test("backoff grows exponentially, is capped, and is jittered from zero", () => {
    expect(backoffMs(policy, 1, () => 0.999)).toBe(25);
    expect(backoffMs(policy, 2, () => 0.999)).toBe(50);
    expect(backoffMs(policy, 3, () => 0.999)).toBe(100);
    expect(backoffMs(policy, 10, () => 0.999)).toBe(100);
    expect(backoffMs(policy, 3, () => 0)).toBe(0);
  });

  test("budget allows min_retries_per_second over the window plus a share of requests", () => {
    let now = 1_000_000;
    const budget = new RetryBudget(20, 1, () => now);
    // 10 s window × 1/s = 10 retries with no traffic at all.
    let allowed = 0;
    for (let i = 0; i < 100; i++) if (budget.tryRetry()) allowed++;
    expect(allowed).toBe(10);
    // 100 requests add 20% = 20 more.
    for (let i = 0; i < 100; i++) budget.recordRequest();
    allowed = 0;
    for (let i = 0; i < 100; i++) if (budget.tryRetry()) allowed++;
    expect(allowed).toBe(20);
    // After the window passes the budget refills.
    now += 11_000;
    expect(budget.tryRetry()).toBe(true);
  });
});

describe("circuit breaker", () => {
  test("queues up to max_pending, refuses beyond with RESOURCE_EXHAUSTED, hands slots over in order", async () => {
    const b = new CircuitBreaker("pkg.Svc", 1, 1);
    expect(b.acquire(Infinity)).toBeUndefined();
    expect(b.open).toBe(true);
    const waiting = b.acquire(Infinity)!;
    expect(b.pending).toBe(1);
    const refused = b.acquire(Infinity)!;
    const err = await refused.catch((e) => e);
    expect(err).toBeInstanceOf(RpcError);
    expect((err as RpcError).code).toBe(Status.RESOURCE_EXHAUSTED);
    expect((err as RpcError).details).toContain("max_concurrent 1");
    expect(b.rejections).toBe(1);
    b.release();
    await waiting;
    expect(b.active).toBe(1);
    expect(b.pending).toBe(0);
    b.release();
    expect(b.active).toBe(0);
    expect(b.open).toBe(false);
  });

  test("a waiter whose deadline passes leaves the line with DEADLINE_EXCEEDED", async () => {
    const b = new CircuitBreaker("pkg.Svc", 1, 5);
    b.acquire(Infinity);
    const err = await b.acquire(Date.now() + 5)!.catch((e) => e);
    expect((err as RpcError).code).toBe(Status.DEADLINE_EXCEEDED);
    expect(b.pending).toBe(0);
  });
});

test("circuit breaker: a waiter whose caller cancels leaves the line at once", async () => {
  const b = new CircuitBreaker("pkg.Svc", 1, 5);
  b.acquire(Infinity);
  const ac = new AbortController();
  const waiting = b.acquire(Infinity, ac.signal)!;
  expect(b.pending).toBe(1);
  ac.abort();
  const err = await waiting.catch((e) => e);
  expect((err as RpcError).code).toBe(Status.CANCELLED);
  expect(b.pending).toBe(0);
  b.release();
  expect(b.active).toBe(0);
});

describe("outlier detection", () => {
  test("ejects after consecutive failures, within max_ejection_percent, for a growing time", () => {
    let now = 0;
    const ejected: string[] = [];
    const od = new OutlierDetector({ consecutiveFailures: 2, baseEjectionMs: 1000, maxEjectionPercent: 50 }, () => now, (e) => ejected.push(e.address));
    const eps = ["a:1", "b:1"].map(newEndpoint);
    const [a, b] = eps as [ReturnType<typeof newEndpoint>, ReturnType<typeof newEndpoint>];
    od.record(a, Status.UNAVAILABLE, eps);
    od.record(a, Status.OK, eps); // success resets the streak
    od.record(a, Status.UNAVAILABLE, eps);
    expect(od.isEjected(a)).toBe(false);
    od.record(a, Status.UNAVAILABLE, eps);
    expect(od.isEjected(a)).toBe(true);
    expect(ejected).toEqual(["a:1"]);
    expect(od.healthy(eps, []).map((e) => e.address)).toEqual(["b:1"]);
    // b may not be ejected too: 2 of 2 is over 50%.
    od.record(b, Status.UNAVAILABLE, eps);
    od.record(b, Status.UNAVAILABLE, eps);
    expect(od.isEjected(b)).toBe(false);
    // Request errors are not host failures.
    od.record(b, Status.INVALID_ARGUMENT, eps);
    expect(b.consecutiveFailures).toBe(0);
    now = 1001;
    expect(od.isEjected(a)).toBe(false);
    od.record(a, Status.UNAVAILABLE, eps);
    od.record(a, Status.UNAVAILABLE, eps);
    expect(a.ejectedUntil).toBe(1001 + 2000); // second ejection lasts twice as long
  });

  test("a single endpoint is never ejected at 50%", () => {
    const od = new OutlierDetector({ consecutiveFailures: 1, baseEjectionMs: 1000, maxEjectionPercent: 50 });
    const eps = [newEndpoint("a:1")];
    od.record(eps[0]!, Status.UNAVAILABLE, eps);
    expect(od.isEjected(eps[0]!)).toBe(false);
  });
});
