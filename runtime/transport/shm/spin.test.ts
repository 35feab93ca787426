import { afterEach, describe, expect, test } from "bun:test";
import { FrameKind } from "../../rpc/frame.ts";
import { TestResources, waitFor } from "../../../test/helpers.ts";
import { connectedShmPair, type ShmPair } from "./pair.ts";
import { AUTO_MAX_LOADED_US, AUTO_MAX_US, parseSpinSetting, SpinPolicy, spinFromWire, spinToWire } from "./spin.ts";

describe("spin setting", () => {
  test("parses off, auto and microseconds; rejects anything else naming the source", () => {
    expect(parseSpinSetting(undefined)).toBe("auto");
    expect(parseSpinSetting("")).toBe("auto");
    expect(parseSpinSetting("off")).toBe("off");
    expect(parseSpinSetting("auto")).toBe("auto");
    expect(parseSpinSetting("0")).toBe("off");
    expect(parseSpinSetting("25")).toBe(25);
    expect(parseSpinSetting(40)).toBe(40);
    for (const bad of ["on", "-1", "1.5", "10us", "99999999"]) {
      expect(() => parseSpinSetting(bad, "mesh.yaml shm.spin")).toThrow(/^mesh\.yaml shm\.spin=.* is not a spin setting: use "off", "auto" or/);
    }
  });

  test("round-trips through the ShmSetup wire encoding", () => {
    for (const s of ["off", "auto", 1, 250] as const) expect(spinFromWire(spinToWire(s))).toBe(s);
  });
});

describe("spin policy", () => {
  test("off never spins; a fixed bound always spins that long, whatever happens", () => {
    const off = new SpinPolicy("off");
    expect(off.budgetUs(false)).toBe(0);
    const fixed = new SpinPolicy(30);
    fixed.miss();
    fixed.miss();
    expect(fixed.budgetUs(false)).toBe(30);
    expect(fixed.budgetUs(true)).toBe(30);
  });

  test("auto: misses (spins that ended parked) halve the budget down to parking at once", () => {
    const p = new SpinPolicy("auto");
    const start = p.budgetUs(false);
    expect(start).toBeGreaterThan(0);
    p.miss();
    expect(p.budgetUs(false)).toBe(start / 2);
    for (let i = 0; i < 20; i++) p.miss();
    expect(p.currentUs).toBe(0);
  });

  test("auto: at zero it probes now and then, so a change of placement is noticed", () => {
    const p = new SpinPolicy("auto");
    while (p.currentUs > 0) p.miss();
    // Probes that keep missing back off to one wait in 256, each 50 µs (an idle CPU's wake-up).
    const budgets: number[] = [];
    for (let i = 0; i < 2000; i++) {
      const b = p.budgetUs(false);
      budgets.push(b);
      if (b > 0) p.miss(true);
    }
    expect(Math.max(...budgets)).toBe(50);
    const at = budgets.flatMap((b, i) => (b > 0 ? [i] : []));
    expect(at.slice(-3)).toEqual([1278, 1534, 1790]);
    // A probe that pays off brings spinning back.
    p.hit(3);
    expect(p.budgetUs(false)).toBeGreaterThanOrEqual(7);
  });

  test("auto: right after falling to zero it probes sooner, backing off as probes miss", () => {
    // A busy pair whose peer was preempted for a few waits should not park 16 times before its next
    // chance to spin; a peer that stays slow costs a handful of extra probes once.
    const p = new SpinPolicy("auto");
    while (p.currentUs > 0) p.miss();
    const probes: number[] = [];
    for (let i = 0; i < 300; i++) {
      if (p.budgetUs(false) > 0) {
        probes.push(i);
        p.miss();
      }
    }
    expect(probes).toEqual([0, 2, 6, 14, 30, 62, 126, 254]);
    // After a run of hits the next fall to zero starts the back-off over.
    for (let i = 0; i < 8; i++) p.hit(5);
    while (p.currentUs > 0) p.miss();
    expect(p.budgetUs(false)).toBe(50);
  });

  test("auto: a miss after waking a sleeping peer, while spins still hit now and then, only shaves the budget", () => {
    // The peer's wake-up, not the spin, was slow.
    const p = new SpinPolicy("auto");
    for (let i = 0; i < 3; i++) p.hit(20);
    expect(p.currentUs).toBe(41);
    p.miss(true);
    expect(p.currentUs).toBeCloseTo(36.9, 5);
    p.miss(false);
    expect(p.currentUs).toBeCloseTo(18.45, 5);
  });

  test("auto, low rate: a lone hit among misses (the peer always asleep) costs at most ~150 µs of spin in all", () => {
    // 1,000 calls/s: every wait lasts ~1 ms, each side rang the peer before it. Spins of 50, 45,
    // 40.5 ... after one lucky probe were ~500 µs, then the probes started over at every other wait.
    const p = new SpinPolicy("auto");
    while (p.currentUs > 0) p.miss(true);
    for (let i = 0; i < 2000; i++) if (p.budgetUs(false, 5) > 0) p.miss(true); // settled: probes rare
    let spun = 0;
    let probes = 0;
    let lucky = false;
    for (let i = 0; i < 1000; i++) {
      const b = p.budgetUs(false, 5);
      if (b === 0) continue;
      if (!lucky && p.currentUs === 0) {
        lucky = true;
        spun += 40;
        p.hit(40); // the one probe whose answer came within the spin
        continue;
      }
      if (p.currentUs === 0) probes++;
      spun += b;
      p.miss(true);
    }
    expect(lucky).toBe(true);
    // The hit's budget (81, spun at most 50 at a time) halves away: 50 + 40.5 + 20.25 + ... ≈ 111 µs,
    // and the probes keep their back-off (at most ~4 in 1,000 waits).
    expect(probes).toBeLessThanOrEqual(4);
    expect(spun - 40 - probes * 50).toBeLessThan(150);
  });

  test("auto: a steady exchange whose peer often sleeps keeps its spin (doorbell misses only shave while hits are common)", () => {
    // Half the waits hit, half miss right after a doorbell (a busy pipeline whose peer parks between
    // batches): the budget must stay, not halve to parking.
    const p = new SpinPolicy("auto");
    let lowest = Infinity;
    for (let round = 0; round < 100; round++) {
      p.hit(20);
      p.hit(20);
      p.miss(true);
      p.miss(true);
      if (round >= 8) lowest = Math.min(lowest, p.currentUs); // after its first hits set the rate
    }
    expect(lowest).toBeGreaterThan(30);
    expect(p.budgetUs(false)).toBeGreaterThan(30);
  });

  test("auto: a miss among mostly hits only shaves the budget; misses in a row still halve it to zero", () => {
    // A busy pipelined pair hits nearly every wait; the odd miss (the peer was preempted or worked
    // through a long batch) must not send it to parking, a doorbell and a wake-up per wait.
    const p = new SpinPolicy("auto");
    for (let i = 0; i < 30; i++) p.hit(20);
    expect(p.currentUs).toBe(41);
    p.miss();
    expect(p.currentUs).toBeCloseTo(36.9, 5);
    // A peer that stopped answering within the spin: a couple more shaves, then halving to zero.
    for (let i = 0; i < 12; i++) p.miss();
    expect(p.currentUs).toBe(0);
    expect(p.budgetUs(false)).toBe(0);
  });

  test("auto: hits raise the budget to cover twice the wait, capped", () => {
    const p = new SpinPolicy("auto");
    p.hit(15);
    expect(p.currentUs).toBe(31);
    p.hit(1000);
    expect(p.currentUs).toBe(AUTO_MAX_LOADED_US);
    // Spinning that long only pays under load, when we work at least as long between two waits;
    // at low rates (short work between waits) the spin stays at AUTO_MAX_US.
    expect(p.budgetUs(false)).toBe(AUTO_MAX_US);
    for (let i = 0; i < 40; i++) p.budgetUs(false, 5);
    expect(p.budgetUs(false, 5)).toBe(AUTO_MAX_US);
    for (let i = 0; i < 40; i++) p.budgetUs(false, 500);
    expect(p.budgetUs(false, 500)).toBe(AUTO_MAX_LOADED_US);
  });

  test("auto: no spinning while the peer runs on our CPU (it could not answer while we spin)", () => {
    const p = new SpinPolicy("auto");
    p.hit(10);
    expect(p.budgetUs(true)).toBe(0);
    expect(p.budgetUs(false)).toBeGreaterThan(0);
  });
});

describe("a spinning ShmTransport (in one process, so every spin ends parked)", () => {
  const res = new TestResources();
  let pair: ShmPair | undefined;
  afterEach(async () => {
    pair?.close();
    pair = undefined;
    await res.cleanup();
  });

  test("frames delivered a few per poll, with handlers answering in between, stay in order both ways; then it parks", async () => {
    pair = await connectedShmPair({ dir: res.scratchDir(), spin: 30 });
    const got: number[] = [];
    const echoed: number[] = [];
    const sidecar = pair.sidecar;
    pair.app.start({ onFrame: (_k, _f, callId) => void echoed.push(callId), onClose() {} });
    sidecar.start({
      // Answers a couple of microtasks later, like an async handler.
      onFrame: (_k, _f, callId) => {
        got.push(callId);
        void Promise.resolve()
          .then(() => undefined)
          .then(() => sidecar.send(FrameKind.END, 0, callId, 0));
      },
      onClose() {},
    });
    for (let i = 1; i <= 300; i++) pair.app.send(FrameKind.CALL, 0, i, 0, new Uint8Array([i & 0xff]));
    await waitFor(() => echoed.length === 300, { what: "300 answers" });
    const inOrder = Array.from({ length: 300 }, (_, i) => i + 1);
    expect(got).toEqual(inOrder);
    expect(echoed).toEqual(inOrder);
    await waitFor(() => pair!.app.isParked && pair!.sidecar.isParked, { what: "both readers parked" });
    // Its peer shares its thread, so no spin could end any other way than parked.
    expect(pair.app.stats.spinMisses + pair.sidecar.stats.spinMisses).toBeGreaterThan(0);
  });
});
