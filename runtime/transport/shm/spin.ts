// How long a consumer that found its ring empty keeps polling before it parks (and the producer then
// has to ring the doorbell: a write(2) on its side, an epoll wake-up and often an idle-CPU wake-up on
// ours, 15–35 µs on a VM). Spinning only pays when the peer runs on another CPU and answers within the
// spin; when both share one CPU, spinning just delays the peer. A fixed spin is wrong on one of the two
// placements, so `auto` learns from outcomes:
//   - a wait that ended while spinning after w µs ("hit") raises the budget to cover 2·w;
//   - a spin that ended in parking ("miss") halves it; below 1 µs it is 0 (park at once). Two kinds of
//     miss say little about spinning and only shave the budget by a tenth: one right after we had to
//     wake the peer with a doorbell (the peer was asleep, so its answer had to wait for its wake-up)
//     while spins still hit now and then (recent hit rate ≥ SOME_HIT_RATE), and one among mostly hits
//     (recent hit rate ≥ STEADY_HIT_RATE: a steady exchange whose peer was preempted, collected
//     garbage or worked through a long batch once). Halving on those made a busy pipelined pair
//     collapse to parking - a doorbell and an epoll wake-up per wait - after four unlucky waits, and
//     stay there. At low rates (every wait ~1 ms, the peer always asleep) a lone hit among misses
//     must not buy a tail of shaved spins (50, 45, 40.5 … ≈ 500 µs): there hits are rare and misses
//     halve (~110 µs). (bench-mesh at 1,000 calls/s saw no hits at all, so no such tail, in either placement);
//   - at 0, one wait in probeEvery spins PROBE_US (long enough to cover an idle CPU's wake-up), so
//     spinning comes back when it starts to pay (the peer moved to its own core, or began to spin).
//     Right after the budget fell to 0 the probes come sooner - the next wait, then one in 2, 4, 8 -
//     backing off as they miss: a busy pair whose peer was preempted for a few waits got its spin
//     back only 16 parks (a doorbell and an epoll wake-up each) later, which was most of its parks.
//     The back-off goes on to one in PROBE_EVERY_MAX: at 1,000 calls/s with each pair on two CPUs,
//     one in 16 was 56 probes/s, every one a miss, 2.8 ms of spin per second in each of the four
//     endpoints, all the spinning they did (stats.spinUs); a busy pair gets through 256 waits in a
//     few ms. A fall to 0 restarts the back-off only after a run of hits (hit rate ≥ SOME_HIT_RATE),
//     not after a lone probe that hit;
//   - if the peer last reported running on our CPU, that wait does not spin at all;
//   - the budget is at most AUTO_MAX_US, or up to AUTO_MAX_LOADED_US while we work at least as long
//     between two waits (a loaded pipeline: the peer is working through a batch or was preempted for
//     a moment, and the extra spin is a small share of our time); at low rates, where every call
//     waits and the work between waits is short, the longer spin would be most of our CPU.
// (Parking is dear on a VM: a doorbell, an epoll wake-up, a read and an event-loop turn, ~15-20 us of
// CPU between the two processes. Capping the spin at the work done between waits, so that at 10k
// calls/s both sides park instead of one spinning through the gap, cost ~10% more CPU in total.)

export type SpinSetting = "off" | "auto" | number;

export const AUTO_MAX_US = 50;
export const AUTO_MAX_LOADED_US = 100;
const AUTO_START_US = 10;
const PROBE_US = 50;
/** Longest back-off between probes at budget 0 while they keep missing. */
const PROBE_EVERY_MAX = 256;
/** Weight of the newest outcome in the recent hit rate (an average over roughly the last 8 waits). */
const RATE_WEIGHT = 1 / 8;
const STEADY_HIT_RATE = 0.75;
/** Below this recent hit rate hits are rare: doorbell misses halve the budget too. */
const SOME_HIT_RATE = 0.25;
/** Weight of the newest sample in the average work between waits. */
const BUSY_WEIGHT = 1 / 8;
export const MAX_FIXED_SPIN_US = 1_000_000;

/** Parses MESH_SHM_SPIN / a config value. Throws naming the source and the accepted forms. */
export function parseSpinSetting(value: string | number | undefined, source = "MESH_SHM_SPIN"): SpinSetting {
  if (value === undefined || value === "") return "auto";
  if (value === "off" || value === "auto") return value;
  const n = typeof value === "number" ? value : /^\d+$/.test(value.trim()) ? Number(value.trim()) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > MAX_FIXED_SPIN_US) {
    throw new Error(
      `${source}=${JSON.stringify(value)} is not a spin setting: use "off", "auto" or a whole number of microseconds up to ${MAX_FIXED_SPIN_US}`,
    );
  }
  return n === 0 ? "off" : n;
}

/** The spin_us value of ShmSetup: 0 = park at once, 0xFFFFFFFF = adaptive, else µs. */
export function spinToWire(s: SpinSetting): number {
  return s === "off" ? 0 : s === "auto" ? 0xffffffff : s;
}

export function spinFromWire(n: number): SpinSetting {
  return n === 0 ? "off" : n === 0xffffffff ? "auto" : Math.min(n, MAX_FIXED_SPIN_US);
}

export class SpinPolicy {
  private budget: number;
  private parksAtZero = 0;
  /**
   * Waits between probes at budget 0: 1 when it first gets there or after a run of hits, doubling per
   * missed probe up to PROBE_EVERY_MAX.
   */
  private probeEvery = 1;
  /** Exponentially weighted share of recent spins that were hits (0 before the first). */
  private hitRate = 0;
  /** Average µs of work between two waits (0 until told). */
  private busyUs = 0;
  hits = 0;
  misses = 0;

  constructor(readonly setting: SpinSetting) {
    this.budget = setting === "off" ? 0 : setting === "auto" ? AUTO_START_US : setting;
  }

  /**
   * µs to spin before parking, for the wait that starts now. `busyUs`: how long we worked since the
   * previous wait ended (omitted: unknown, counts as short).
   */
  budgetUs(peerOnMyCpu: boolean, busyUs?: number): number {
    if (this.setting === "off") return 0;
    if (this.setting !== "auto") return this.budget;
    if (busyUs !== undefined) this.busyUs += (busyUs - this.busyUs) * BUSY_WEIGHT;
    if (peerOnMyCpu) return 0;
    if (this.budget > 0) return Math.min(this.budget, Math.max(AUTO_MAX_US, Math.min(AUTO_MAX_LOADED_US, this.busyUs)));
    if (++this.parksAtZero >= this.probeEvery) {
      this.parksAtZero = 0;
      return PROBE_US;
    }
    return 0;
  }

  /** The current adaptive budget (for stats and tests). */
  get currentUs(): number {
    return this.budget;
  }

  hit(waitedUs: number): void {
    this.hits++;
    if (this.setting !== "auto") return;
    this.hitRate += (1 - this.hitRate) * RATE_WEIGHT;
    this.budget = Math.min(AUTO_MAX_LOADED_US, Math.max(this.budget, 2 * waitedUs + 1));
  }

  /** A spin ended in parking. `peerWasAsleep`: we had rung the peer's doorbell just before this wait. */
  miss(peerWasAsleep = false): void {
    this.misses++;
    if (this.setting !== "auto") return;
    const probe = this.budget === 0;
    const steady = this.hitRate >= STEADY_HIT_RATE;
    const someHits = this.hitRate >= SOME_HIT_RATE;
    this.hitRate -= this.hitRate * RATE_WEIGHT;
    this.budget = (peerWasAsleep && someHits) || steady ? this.budget * 0.9 : this.budget / 2;
    if (this.budget < 1) {
      this.budget = 0;
      if (probe) this.probeEvery = Math.min(PROBE_EVERY_MAX, this.probeEvery * 2);
      else if (someHits) this.probeEvery = 1;
      if (!probe) this.parksAtZero = 0;
    }
  }
}
