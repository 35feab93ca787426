// One process-wide queue of call deadlines behind a single native timer.
//
// At 1,000 calls/s every call runs cache-cold, and a call into Bun's runtime is expensive from cold
// code: a setTimeout per call deadline and its clearTimeout were ~1.5 % of a sidecar's CPU (perf
// with JSC's jitdump), plus a Timeout object per call, although nearly every call ends long before
// its deadline. Here a deadline is an entry in a binary min-heap: add() and remove() are plain JS and
// make no runtime call in the common case. The one timer is armed lazily for a time T:
//   - remove() never touches it, even when the head goes: the timer fires early, finds nothing due
//     and is armed again for the head then (or stays off when the queue is empty);
//   - add() re-arms only for a deadline earlier than T. Call deadlines are mostly "now + a fixed
//     timeout", later than every one queued before, so at a steady rate the timer is set about once
//     per timeout, not once per call.
// remove() is eager (O(log n), each entry knows its slot in the heap): a finished call must not stay
// referenced until its deadline, or a 30 s deadline at 1,000 calls/s would hold 30,000 calls.
//
// The timer is unref'd: a process whose only pending work is deadlines can exit. Every call that has
// a deadline here also holds its connection's socket, which keeps the process alive while it runs.
// Deadlines come in as Date.now() ms, as the call sites compute them (CallOptions.deadline,
// grpc-timeout), and are kept on the monotonic clock (performance.now()): converted once in add(),
// so a step of the wall clock afterwards (a VM resumed, a clock set by hand) neither fires a call's
// deadline early nor holds it late, as with the per-call setTimeout before (and grpc-js, Envoy).
// Entries whose deadlines come due together fire in no particular order.

/** An entry's slot when it is not queued: entries start with `deadlineSlot = NOT_QUEUED`. */
export const NOT_QUEUED = -1;
/** Taken out of the heap by a firing, its callback not called yet (a callback before it may remove it). */
const DUE = -2;

/**
 * Something with a deadline, usually a call object: the queue keeps the object itself, so a deadline
 * needs no closure and no object of its own.
 */
export interface DeadlineEntry {
  /** Owned by the queue: the entry's slot in the heap, NOT_QUEUED when not queued. Start it at NOT_QUEUED. */
  deadlineSlot: number;
  /** The deadline passed: called once per add(), on a later turn than add(), unless removed first. */
  onDeadline(): void;
}

/** The clock and the native timer; a test passes its own. */
export interface DeadlineClock {
  /** Milliseconds on the scale the queue keeps deadlines on (monotonic for the real clock). */
  now(): number;
  /**
   * The scale of the deadlines passed to add(), when it differs from now()'s (the real clock: Date.now());
   * add() converts with both clocks read then. Without it, add() takes deadlines on now()'s scale.
   */
  wall?(): number;
  /** Arms a one-shot timer that calls `fire` after `ms` (0 ≤ ms ≤ MAX_TIMER_MS); returns its handle. */
  set(fire: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

/** setTimeout's limit: a longer delay is taken as 1 ms (with a TimeoutOverflowWarning). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** Monotonic time for the queue, Date.now() for the deadlines the call sites pass; unref'd timers. */
const SYSTEM_CLOCK: DeadlineClock = {
  now: () => performance.now(),
  wall: () => Date.now(),
  set: (fire, ms) => setTimeout(fire, ms).unref(),
  clear: (handle) => clearTimeout(handle as Timer),
};

export class DeadlineQueue {
  /** The heap: entries[i]'s deadline is keys[i]; a parent's key is ≤ its children's. */
  private readonly entries: DeadlineEntry[] = [];
  private readonly keys: number[] = [];
  private timer: unknown;
  /** When the armed timer fires (clock ms); Infinity when it is off, -Infinity when it fires next turn. */
  private armedAt = Infinity;
  private firing = false;
  /** Entries taken out by the current firing (reused: no array per firing). */
  private readonly due: DeadlineEntry[] = [];

  constructor(private readonly clock: DeadlineClock = SYSTEM_CLOCK) {}

  /** Entries queued. */
  get size(): number {
    return this.entries.length;
  }

  /** When the native timer will fire (clock ms): Infinity when it is off, -Infinity for "next turn". */
  get timerAt(): number {
    return this.armedAt;
  }

  /**
   * Queues `entry` to have onDeadline() called once the wall clock reaches `at` (Date.now() ms; a
   * deadline already past fires on a later turn, never inside add()). An entry already queued moves
   * to the new deadline.
   */
  add(entry: DeadlineEntry, at: number): void {
    if (entry.deadlineSlot !== NOT_QUEUED) this.remove(entry);
    if (Number.isNaN(at)) at = -Infinity; // as setTimeout(f, NaN): at once
    else if (this.clock.wall && Number.isFinite(at)) at = at - this.clock.wall() + this.clock.now();
    const i = this.entries.length;
    this.entries.push(entry);
    this.keys.push(at);
    this.siftUp(i, entry, at);
    if (at < this.armedAt && !this.firing) this.arm(at);
  }

  /** Takes `entry` out of the queue (eagerly, so the queue no longer holds it); a no-op if not queued. */
  remove(entry: DeadlineEntry): void {
    const i = entry.deadlineSlot;
    if (i < 0) {
      entry.deadlineSlot = NOT_QUEUED; // DUE: its firing skips it
      return;
    }
    entry.deadlineSlot = NOT_QUEUED;
    const lastEntry = this.entries.pop()!;
    const lastKey = this.keys.pop()!;
    if (i === this.entries.length) return; // it was the last slot
    // The last entry fills the hole and moves up or down to its place.
    if (i > 0 && lastKey < this.keys[(i - 1) >> 1]!) this.siftUp(i, lastEntry, lastKey);
    else this.siftDown(i, lastEntry, lastKey);
  }

  /** The timer's callback: calls every entry whose deadline has passed, then arms for the next one. */
  private readonly fire = (): void => {
    this.timer = undefined;
    this.armedAt = Infinity;
    const now = this.clock.now();
    const due = this.due;
    while (this.keys.length > 0 && this.keys[0]! <= now) {
      const head = this.entries[0]!;
      this.remove(head);
      head.deadlineSlot = DUE;
      due.push(head);
    }
    // Callbacks may add and remove entries (and throw): the ones they add fire on a later turn, as
    // the timer is armed only once they are all done; one that throws does not stop the others.
    this.firing = true;
    let error: unknown;
    let threw = false;
    for (let k = 0; k < due.length; k++) {
      const entry = due[k]!;
      if (entry.deadlineSlot !== DUE) continue; // removed (or queued again) by an earlier callback
      entry.deadlineSlot = NOT_QUEUED;
      try {
        entry.onDeadline();
      } catch (e) {
        if (!threw) error = e;
        threw = true;
      }
    }
    due.length = 0;
    this.firing = false;
    if (this.keys.length > 0) this.arm(this.keys[0]!);
    if (threw) throw error; // as an uncaught exception in a timer callback of its own would be
  };

  /** (Re)arms the timer for `at`: the one place where the queue calls into the runtime. */
  private arm(at: number): void {
    if (this.timer !== undefined) this.clock.clear(this.timer);
    const now = this.clock.now();
    const ms = Math.min(MAX_TIMER_MS, Math.max(0, Math.ceil(at - now)));
    // A far deadline gets a timer of MAX_TIMER_MS, which fires early and arms again.
    this.armedAt = ms === 0 ? -Infinity : now + ms;
    this.timer = this.clock.set(this.fire, ms);
  }

  private siftUp(i: number, entry: DeadlineEntry, key: number): void {
    const entries = this.entries;
    const keys = this.keys;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const parentKey = keys[parent]!;
      if (parentKey <= key) break;
      const parentEntry = entries[parent]!;
      entries[i] = parentEntry;
      keys[i] = parentKey;
      parentEntry.deadlineSlot = i;
      i = parent;
    }
    entries[i] = entry;
    keys[i] = key;
    entry.deadlineSlot = i;
  }

  private siftDown(i: number, entry: DeadlineEntry, key: number): void {
    const entries = this.entries;
    const keys = this.keys;
    const n = entries.length;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && keys[child + 1]! < keys[child]!) child++;
      const childKey = keys[child]!;
      if (key <= childKey) break;
      const childEntry = entries[child]!;
      entries[i] = childEntry;
      keys[i] = childKey;
      childEntry.deadlineSlot = i;
      i = child;
    }
    entries[i] = entry;
    keys[i] = key;
    entry.deadlineSlot = i;
  }
}

/** The process's queue: every call deadline in the process shares its one timer. */
export const deadlines = new DeadlineQueue();
