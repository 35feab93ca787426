// The deadline queue: heap order, eager removal, re-entrant callbacks and the one lazily armed timer,
// on a fake clock (every set/clear of the timer counted) and on the real one (turns, unref, the
// setTimeout limit).
import { describe, expect, test } from "bun:test";
import { REPO_ROOT } from "../../test/helpers.ts";
import { type DeadlineClock, type DeadlineEntry, DeadlineQueue, MAX_TIMER_MS, NOT_QUEUED } from "./deadline-queue.ts";

interface FakeTimer {
  fire: () => void;
  at: number;
}

/** A clock whose time moves only when told; holds the queue's one timer and counts set/clear calls. */
class FakeClock implements DeadlineClock {
  t = 1_000_000;
  timer: FakeTimer | undefined;
  sets = 0;
  clears = 0;
  lastMs = -1;

  now(): number {
    return this.t;
  }
  set(fire: () => void, ms: number): unknown {
    if (this.timer) throw new Error("a second timer armed while one is pending");
    if (!(ms >= 0 && ms <= MAX_TIMER_MS) || !Number.isInteger(ms)) throw new Error(`bad delay ${ms}`);
    this.sets++;
    this.lastMs = ms;
    this.timer = { fire, at: this.t + ms };
    return this.timer;
  }
  clear(handle: unknown): void {
    this.clears++;
    if (this.timer === handle) this.timer = undefined;
  }
  /** Moves the time to `to`, firing the timer each time it comes due on the way (as the event loop would). */
  advance(to: number): void {
    while (this.timer && this.timer.at <= to) {
      const { fire, at } = this.timer;
      this.timer = undefined;
      this.t = at;
      fire();
    }
    this.t = to;
  }
  /** The timer fires late, at `t` (a busy event loop): everything due by then comes in one firing. */
  fireLate(t: number): void {
    const { fire } = this.timer!;
    this.timer = undefined;
    this.t = t;
    fire();
  }
}

/** An entry that records its firings into `log`, then runs `then` (if any). */
class Entry implements DeadlineEntry {
  deadlineSlot = NOT_QUEUED;
  fired = 0;
  then: (() => void) | undefined;
  constructor(
    readonly name: string,
    private readonly log: string[] = [],
  ) {}
  onDeadline(): void {
    this.fired++;
    this.log.push(this.name);
    this.then?.();
  }
}

/** White-box: every parent's key ≤ its children's, and every entry knows its slot. */
function checkHeap(q: DeadlineQueue): void {
  const { entries, keys } = q as unknown as { entries: DeadlineEntry[]; keys: number[] };
  expect(entries.length).toBe(keys.length);
  for (let i = 0; i < entries.length; i++) {
    expect(entries[i]!.deadlineSlot).toBe(i);
    if (i > 0) expect(keys[(i - 1) >> 1]!).toBeLessThanOrEqual(keys[i]!);
  }
}

function setup(): { clock: FakeClock; q: DeadlineQueue; log: string[] } {
  const clock = new FakeClock();
  return { clock, q: new DeadlineQueue(clock), log: [] };
}

/** A deterministic PRNG (mulberry32), so a failure can be replayed. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("DeadlineQueue on a fake clock", () => {
  test("entries fire in deadline order, each when its deadline is reached", () => {
    const { clock, q, log } = setup();
    const t0 = clock.t;
    for (const d of [50, 10, 40, 30, 20, 60, 5]) q.add(new Entry(String(d), log), t0 + d);
    checkHeap(q);
    clock.advance(t0 + 29);
    expect(log).toEqual(["5", "10", "20"]);
    clock.advance(t0 + 100);
    expect(log).toEqual(["5", "10", "20", "30", "40", "50", "60"]);
    expect(q.size).toBe(0);
  });

  test("deadlines come on the wall clock and are kept on the monotonic one: a wall-clock step after add() moves nothing", () => {
    // The fake clock's time is the monotonic clock; the wall clock runs 5,000 ms ahead of it and then
    // steps back an hour, then forward two.
    const clock = new FakeClock();
    let wallOffset = 5_000;
    const wallClock: DeadlineClock = {
      now: () => clock.now(),
      wall: () => clock.now() + wallOffset,
      set: (fire, ms) => clock.set(fire, ms),
      clear: (h) => clock.clear(h),
    };
    const q = new DeadlineQueue(wallClock);
    const log: string[] = [];
    const t0 = clock.t;
    q.add(new Entry("a", log), t0 + wallOffset + 100); // due 100 ms from now
    wallOffset -= 3_600_000;
    q.add(new Entry("b", log), t0 + wallOffset + 200); // due 200 ms from now, by the stepped wall clock
    wallOffset += 7_200_000;
    clock.advance(t0 + 99);
    expect(log).toEqual([]);
    clock.advance(t0 + 100);
    expect(log).toEqual(["a"]);
    clock.advance(t0 + 200);
    expect(log).toEqual(["a", "b"]);
  });

  test("the timer is off while the queue is empty, and goes off again after the last firing", () => {
    const { clock, q } = setup();
    expect(q.timerAt).toBe(Infinity);
    expect(clock.sets).toBe(0);
    const e = new Entry("e");
    q.add(e, clock.t + 100);
    expect(clock.sets).toBe(1);
    expect(q.timerAt).toBe(clock.t + 100);
    clock.advance(clock.t + 100);
    expect(e.fired).toBe(1);
    expect(clock.timer).toBeUndefined();
    expect(q.timerAt).toBe(Infinity);
    expect(clock.sets).toBe(1);
  });

  test("removing the head leaves the timer armed: it fires early, finds nothing due, and stays off", () => {
    const { clock, q } = setup();
    const e = new Entry("e");
    q.add(e, clock.t + 100);
    q.remove(e);
    expect(q.size).toBe(0);
    expect(e.deadlineSlot).toBe(NOT_QUEUED);
    expect(clock.clears).toBe(0);
    expect(clock.timer).toBeDefined();
    clock.advance(clock.t + 100);
    expect(e.fired).toBe(0);
    expect(clock.timer).toBeUndefined(); // no periodic tick once idle
    expect(clock.sets).toBe(1);
  });

  test("an early firing arms again for the new head", () => {
    const { clock, q, log } = setup();
    const t0 = clock.t;
    const first = new Entry("first", log);
    q.add(first, t0 + 10);
    q.add(new Entry("second", log), t0 + 50);
    q.remove(first);
    clock.advance(t0 + 10);
    expect(log).toEqual([]);
    expect(clock.sets).toBe(2);
    expect(clock.timer!.at).toBe(t0 + 50);
    clock.advance(t0 + 50);
    expect(log).toEqual(["second"]);
  });

  test("steady calls (each later than the armed time, removed before it) set the timer once", () => {
    const { clock, q } = setup();
    const t0 = clock.t;
    for (let i = 0; i < 1000; i++) {
      const call = new Entry(String(i));
      q.add(call, clock.t + 30_000);
      clock.advance(clock.t + 1);
      q.remove(call);
    }
    expect(clock.sets).toBe(1);
    expect(clock.clears).toBe(0);
    expect(q.size).toBe(0);
    clock.advance(t0 + 30_000);
    expect(clock.timer).toBeUndefined();
  });

  test("a deadline earlier than the armed time re-arms; a later one does not", () => {
    const { clock, q, log } = setup();
    const t0 = clock.t;
    q.add(new Entry("b", log), t0 + 100);
    q.add(new Entry("c", log), t0 + 200);
    expect([clock.sets, clock.clears]).toEqual([1, 0]);
    q.add(new Entry("a", log), t0 + 20);
    expect([clock.sets, clock.clears]).toEqual([2, 1]);
    expect(clock.timer!.at).toBe(t0 + 20);
    clock.advance(t0 + 200);
    expect(log).toEqual(["a", "b", "c"]);
  });

  test("fractional deadlines: the timer is armed for the next whole millisecond, never early", () => {
    const { clock, q } = setup();
    const e = new Entry("e");
    q.add(e, clock.t + 10.4);
    expect(clock.lastMs).toBe(11);
    clock.advance(clock.t + 10);
    expect(e.fired).toBe(0);
    clock.advance(clock.t + 1);
    expect(e.fired).toBe(1);
  });

  test("past deadlines: a 0 ms timer, never a call inside add()", () => {
    const { clock, q, log } = setup();
    const a = new Entry("a", log);
    q.add(a, clock.t - 50);
    q.add(new Entry("b", log), clock.t);
    q.add(new Entry("nan", log), NaN);
    expect(log).toEqual([]);
    expect(clock.lastMs).toBe(0);
    expect(clock.sets).toBe(1); // more past deadlines need no new timer
    clock.advance(clock.t);
    expect(log.sort()).toEqual(["a", "b", "nan"]);
  });

  test("removal of the head, a middle entry and the last slot keeps the heap whole", () => {
    const { clock, q, log } = setup();
    const t0 = clock.t;
    const es = [10, 20, 30, 40, 50, 60, 70, 80, 90].map((d) => {
      const e = new Entry(String(d), log);
      q.add(e, t0 + d);
      return e;
    });
    checkHeap(q);
    const [head, , , middle] = es;
    const last = (q as unknown as { entries: Entry[] }).entries.at(-1)!;
    q.remove(head!);
    checkHeap(q);
    q.remove(middle!);
    checkHeap(q);
    q.remove(last);
    checkHeap(q);
    q.remove(last); // twice: a no-op
    expect(q.size).toBe(6);
    clock.advance(t0 + 1000);
    const removed = new Set([head!.name, middle!.name, last.name]);
    expect(log).toEqual(es.map((e) => e.name).filter((n) => !removed.has(n)));
  });

  test("a moved entry (added again while queued) fires once, at its new deadline", () => {
    const { clock, q, log } = setup();
    const t0 = clock.t;
    const e = new Entry("e", log);
    q.add(e, t0 + 10);
    q.add(new Entry("x", log), t0 + 20);
    q.add(e, t0 + 30);
    expect(q.size).toBe(2);
    checkHeap(q);
    clock.advance(t0 + 100);
    expect(log).toEqual(["x", "e"]);
  });

  test("a fired entry is not fired twice, and removing it afterwards is a no-op", () => {
    const { clock, q } = setup();
    const e = new Entry("e");
    q.add(e, clock.t + 5);
    clock.advance(clock.t + 5);
    clock.advance(clock.t + 1000);
    expect(e.fired).toBe(1);
    expect(e.deadlineSlot).toBe(NOT_QUEUED);
    q.remove(e);
    expect(q.size).toBe(0);
  });

  test("callbacks may remove entries due in the same firing: those do not fire", () => {
    const { clock, q, log } = setup();
    const t0 = clock.t;
    const a = new Entry("a", log);
    const b = new Entry("b", log);
    const c = new Entry("c", log);
    q.add(a, t0 + 1);
    q.add(b, t0 + 2);
    q.add(c, t0 + 3);
    // A channel whose first call's deadline closes the connection ends its other calls too.
    a.then = () => {
      q.remove(b);
      q.remove(c);
    };
    clock.fireLate(t0 + 10);
    expect(log).toEqual(["a"]);
    expect([b.deadlineSlot, c.deadlineSlot]).toEqual([NOT_QUEUED, NOT_QUEUED]);
  });

  test("callbacks may add entries: even past ones fire on the next timer, not in the same firing", () => {
    const { clock, q, log } = setup();
    const t0 = clock.t;
    const a = new Entry("a", log);
    const retry = new Entry("retry", log);
    const later = new Entry("later", log);
    a.then = () => {
      q.add(retry, t0 - 1);
      q.add(later, t0 + 50);
      expect(log).toEqual(["a"]);
    };
    q.add(a, t0 + 5);
    const setsBefore = clock.sets;
    clock.fireLate(t0 + 5);
    expect(log).toEqual(["a"]);
    expect(clock.sets).toBe(setsBefore + 1); // one timer, armed after the callbacks, for the head
    expect(clock.lastMs).toBe(0);
    clock.advance(t0 + 5);
    expect(log).toEqual(["a", "retry"]);
    clock.advance(t0 + 50);
    expect(log).toEqual(["a", "retry", "later"]);
  });

  test("callbacks may re-add an entry due in the same firing, or themselves", () => {
    const { clock, q, log } = setup();
    const t0 = clock.t;
    const a = new Entry("a", log);
    const b = new Entry("b", log);
    q.add(a, t0 + 1);
    q.add(b, t0 + 2);
    a.then = () => {
      q.add(b, t0 + 20); // b was due; now it is not
      if (a.fired === 1) q.add(a, t0 + 10);
    };
    clock.fireLate(t0 + 5);
    expect(log).toEqual(["a"]);
    clock.advance(t0 + 100);
    expect(log).toEqual(["a", "a", "b"]);
  });

  test("a callback that throws: the others still fire, the timer is re-armed, the error is thrown", () => {
    const { clock, q, log } = setup();
    const t0 = clock.t;
    const bad = new Entry("bad", log);
    bad.then = () => {
      throw new Error("boom");
    };
    q.add(bad, t0 + 1);
    q.add(new Entry("good", log), t0 + 1);
    q.add(new Entry("later", log), t0 + 50);
    expect(() => clock.advance(t0 + 1)).toThrow("boom");
    expect(log.sort()).toEqual(["bad", "good"]);
    expect(clock.timer!.at).toBe(t0 + 50);
    clock.advance(t0 + 50);
    expect(log).toContain("later");
  });

  test("far deadlines: the timer never exceeds setTimeout's 2^31-1 ms and re-arms on the way", () => {
    const { clock, q } = setup();
    const t0 = clock.t;
    const far = new Entry("far");
    const never = new Entry("never");
    q.add(far, t0 + 2 ** 33);
    q.add(never, Infinity);
    expect(clock.lastMs).toBe(MAX_TIMER_MS);
    clock.advance(t0 + MAX_TIMER_MS);
    expect(far.fired).toBe(0);
    expect(clock.lastMs).toBe(MAX_TIMER_MS);
    clock.advance(t0 + 2 ** 33 - 1);
    expect(far.fired).toBe(0);
    clock.advance(t0 + 2 ** 33);
    expect(far.fired).toBe(1);
    expect(clock.sets).toBe(6); // 2^33 ms is 4 whole timers and a bit: 5 sets, then one for `never`
    expect(never.fired).toBe(0);
    q.remove(never);
    expect(q.size).toBe(0);
  });

  test("many entries with random deadlines and removals: each due entry fires once, in order", () => {
    const { clock, q } = setup();
    const random = rng(5);
    const t0 = clock.t;
    const fired: number[] = [];
    const all: { e: Entry; at: number; removed: boolean }[] = [];
    for (let i = 0; i < 20_000; i++) {
      const at = t0 + Math.floor(random() * 10_000);
      const e = new Entry(String(i));
      e.then = () => fired.push(at);
      all.push({ e, at, removed: false });
      q.add(e, at);
      if (random() < 0.3) {
        const victim = all[Math.floor(random() * all.length)]!;
        q.remove(victim.e);
        victim.removed = true;
      }
    }
    checkHeap(q);
    expect(q.size).toBe(all.filter((x) => !x.removed).length);
    while (clock.t < t0 + 10_000) clock.advance(clock.t + Math.floor(random() * 300));
    for (let i = 1; i < fired.length; i++) expect(fired[i]!).toBeGreaterThanOrEqual(fired[i - 1]!);
    for (const x of all) expect(x.e.fired).toBe(x.removed ? 0 : 1);
    expect(q.size).toBe(0);
    expect(clock.timer).toBeUndefined();
  });

  test("removal is eager: the queue holds no entry once removed", () => {
    const { clock, q } = setup();
    const es = Array.from({ length: 30_000 }, (_, i) => new Entry(String(i)));
    for (const e of es) q.add(e, clock.t + 30_000);
    for (const e of es) q.remove(e);
    expect(q.size).toBe(0);
    const { entries, keys } = q as unknown as { entries: unknown[]; keys: unknown[] };
    expect(entries.length + keys.length).toBe(0);
  });
});

/** Resolves with Date.now() when `e` fires; rejects after `ms` (never a sleep: a bounded wait). */
function firing(e: Entry, ms = 5_000): Promise<number> {
  return new Promise((resolve, reject) => {
    const guard = setTimeout(() => reject(new Error(`${e.name} did not fire within ${ms} ms`)), ms);
    e.then = () => {
      clearTimeout(guard);
      resolve(Date.now());
    };
  });
}

describe("DeadlineQueue on the real clock", () => {
  test("a deadline fires on its time, not before (Date.now())", async () => {
    const q = new DeadlineQueue();
    const e = new Entry("e");
    const at = Date.now() + 30.5;
    const fired = firing(e);
    q.add(e, at);
    expect(await fired).toBeGreaterThanOrEqual(at);
    expect(q.timerAt).toBe(Infinity);
  });

  test("a past deadline fires on a later turn: not in add(), not before queued microtasks", async () => {
    const q = new DeadlineQueue();
    const e = new Entry("e");
    const fired = firing(e);
    q.add(e, Date.now() - 1_000);
    expect(e.fired).toBe(0);
    await Promise.resolve();
    expect(e.fired).toBe(0);
    await fired;
    expect(e.fired).toBe(1);
  });

  test("a far deadline arms no overflowing timer (no TimeoutOverflowWarning, no early firing)", async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on("warning", onWarning);
    try {
      const q = new DeadlineQueue();
      const far = new Entry("far");
      const near = new Entry("near");
      q.add(far, Date.now() + 2 ** 33);
      const fired = firing(near);
      q.add(near, Date.now() + 20);
      await fired;
      // process warnings are emitted on a later tick: one more timer turn lets them arrive
      await new Promise((r) => setTimeout(r, 0));
      expect(far.fired).toBe(0);
      expect(q.timerAt).toBeLessThanOrEqual(Date.now() + MAX_TIMER_MS);
      expect(warnings).toEqual([]);
      q.remove(far);
    } finally {
      process.off("warning", onWarning);
    }
  });

  test("the timer is unref'd: a process with only a pending deadline exits", async () => {
    const script = `
      import { deadlines, NOT_QUEUED } from ${JSON.stringify(`${REPO_ROOT}/runtime/rpc/deadline-queue.ts`)};
      deadlines.add({ deadlineSlot: NOT_QUEUED, onDeadline() { console.log("fired"); } }, Date.now() + 60_000);
      console.log("armed", deadlines.timerAt !== Infinity);
    `;
    const proc = Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "inherit" });
    const killer = setTimeout(() => proc.kill(), 20_000);
    const code = await proc.exited;
    clearTimeout(killer);
    expect(await new Response(proc.stdout).text()).toBe("armed true\n");
    expect(code).toBe(0);
  }, 30_000);
});
