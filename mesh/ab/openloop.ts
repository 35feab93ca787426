// Open-loop request scheduling: request i is due at start + i / rate, whatever happened to earlier
// requests. The caller measures latency from that intended time, so a stall (in the server or in this
// process) shows up as latency for every request it delayed instead of silently lowering the rate —
// the "coordinated omission" a closed loop suffers from.

export class OpenLoopSchedule {
  readonly intervalMs: number;
  /** Requests whose intended time falls in [startMs, endMs). */
  readonly total: number;
  private issued = 0;

  constructor(
    readonly rateRps: number,
    readonly startMs: number,
    readonly endMs: number,
  ) {
    if (!(rateRps > 0) || !Number.isFinite(rateRps)) throw new RangeError(`open-loop rate must be a positive number, got ${rateRps}`);
    if (!(endMs > startMs)) throw new RangeError(`open-loop window is empty: start ${startMs} ms, end ${endMs} ms`);
    this.intervalMs = 1000 / rateRps;
    // The epsilon absorbs float noise in endMs - startMs (t0 + 500 - t0 can be 500.00000000006),
    // which would otherwise add a request the window does not hold.
    this.total = Math.ceil(((endMs - startMs) * rateRps) / 1000 - 1e-6);
  }

  intendedAt(index: number): number {
    return this.startMs + index * this.intervalMs;
  }

  get issuedCount(): number {
    return this.issued;
  }

  get done(): boolean {
    return this.issued >= this.total;
  }

  /** Index of the first not-yet-issued request and how many are due at `nowMs` (all overdue ones). */
  takeDue(nowMs: number): { first: number; count: number } {
    const first = this.issued;
    if (nowMs < this.startMs) return { first, count: 0 };
    const dueThrough = Math.min(this.total, Math.floor((nowMs - this.startMs) / this.intervalMs) + 1);
    const count = Math.max(0, dueThrough - first);
    this.issued += count;
    return { first, count };
  }

  /** Milliseconds from `nowMs` until the next request is due (0 if one is due now, -1 when done). */
  waitMs(nowMs: number): number {
    if (this.done) return -1;
    return Math.max(0, this.intendedAt(this.issued) - nowMs);
  }
}

export interface OpenLoopClock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

export const realClock: OpenLoopClock = {
  now: () => performance.now(),
  // Bun.sleep honours sub-millisecond waits better than setTimeout, which rounds up to 1 ms.
  sleep: (ms) => Bun.sleep(ms),
};

/**
 * Issues every request of `schedule` at (or, if this process fell behind, as soon as possible after) its
 * intended time. `send` must not wait for the response: that is what makes the loop open.
 */
export async function runOpenLoop(
  schedule: OpenLoopSchedule,
  send: (index: number, intendedMs: number) => void,
  clock: OpenLoopClock = realClock,
): Promise<void> {
  while (!schedule.done) {
    const { first, count } = schedule.takeDue(clock.now());
    for (let i = first; i < first + count; i++) send(i, schedule.intendedAt(i));
    const wait = schedule.waitMs(clock.now());
    if (wait < 0) break;
    // Yield to the event loop even when overdue so responses get processed between bursts.
    await clock.sleep(wait);
  }
}
