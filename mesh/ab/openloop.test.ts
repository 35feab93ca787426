import { describe, expect, test } from "bun:test";
import { OpenLoopSchedule, runOpenLoop, type OpenLoopClock } from "./openloop.ts";

/** A clock that only moves when the loop sleeps (or a test stalls it): deterministic schedules. */
function fakeClock(start = 0): OpenLoopClock & { t: number; sleeps: number[] } {
  const c = {
    t: start,
    sleeps: [] as number[],
    now: () => c.t,
    sleep: async (ms: number) => {
      c.sleeps.push(ms);
      c.t += ms;
    },
  };
  return c;
}

describe("OpenLoopSchedule", () => {
  test("intended times are start + i/rate and the window holds rate × duration requests", () => {
    const s = new OpenLoopSchedule(1000, 100, 1100);
    expect(s.total).toBe(1000);
    expect(s.intendedAt(0)).toBe(100);
    expect(s.intendedAt(500)).toBe(600);
    expect(s.intendedAt(999)).toBe(1099);
  });

  test("float noise in the window's length does not add a request", () => {
    const t0 = 1234.5678901234;
    const end = t0 + 0 + 500; // not exactly 500 ms after t0 in floating point
    expect(new OpenLoopSchedule(200, t0, end).total).toBe(100);
    expect(new OpenLoopSchedule(3, 0, 1000).total).toBe(3);
    expect(new OpenLoopSchedule(3, 0, 1001).total).toBe(4);
  });

  test("takeDue hands out everything overdue at once, in order, never twice", () => {
    const s = new OpenLoopSchedule(100, 0, 1000); // one every 10 ms
    expect(s.takeDue(-5)).toEqual({ first: 0, count: 0 });
    expect(s.takeDue(0)).toEqual({ first: 0, count: 1 });
    expect(s.takeDue(5)).toEqual({ first: 1, count: 0 });
    expect(s.takeDue(95)).toEqual({ first: 1, count: 9 }); // a 90 ms stall: 9 requests are due now
    expect(s.takeDue(95)).toEqual({ first: 10, count: 0 });
    expect(s.takeDue(5000)).toEqual({ first: 10, count: 90 }); // capped at the window's end
    expect(s.done).toBe(true);
    expect(s.waitMs(6000)).toBe(-1);
  });

  test("rejects a zero rate or an empty window with a message", () => {
    expect(() => new OpenLoopSchedule(0, 0, 10)).toThrow(/positive/);
    expect(() => new OpenLoopSchedule(10, 10, 10)).toThrow(/empty/);
  });
});

describe("runOpenLoop", () => {
  test("sends every request at its intended time with a punctual clock", async () => {
    const clock = fakeClock(0);
    const sent: [number, number, number][] = [];
    await runOpenLoop(new OpenLoopSchedule(200, 0, 100), (i, intended) => sent.push([i, intended, clock.t]), clock);
    expect(sent.length).toBe(20);
    expect(sent.map((s) => s[0])).toEqual([...Array(20).keys()]);
    for (const [, intended, at] of sent) expect(at).toBe(intended);
  });

  test("does not wait for responses: a stall makes a burst of late sends, each keeping its intended time", async () => {
    const clock = fakeClock(0);
    const sent: { i: number; intended: number; at: number }[] = [];
    let stalled = false;
    await runOpenLoop(
      new OpenLoopSchedule(100, 0, 200),
      (i, intended) => {
        sent.push({ i, intended, at: clock.t });
        if (i === 3 && !stalled) {
          stalled = true;
          clock.t += 55; // the sender blocked for 55 ms (e.g. a GC pause)
        }
      },
      clock,
    );
    expect(sent.length).toBe(20);
    const late = sent.filter((s) => s.at > s.intended);
    expect(late.map((s) => s.i)).toEqual([4, 5, 6, 7, 8]);
    // Latency measured from `intended` would charge the stall to each delayed request.
    expect(late[0]!.at - late[0]!.intended).toBe(45);
  });

  test("with the real clock, issues exactly rate × duration requests and finishes near the window end", async () => {
    const start = performance.now();
    let n = 0;
    await runOpenLoop(new OpenLoopSchedule(500, start, start + 200), () => n++);
    expect(n).toBe(100);
    expect(performance.now()).toBeGreaterThanOrEqual(start + 198);
  });
});
