// ShmTransport: frames through two shared-memory rings, a doorbell on the uds control connection only
// when the reader sleeps. Implements Transport, so the RPC channel runs over it unchanged.
//
// The reader runs in the JS event loop. A poll delivers a bounded number of records (a few while the
// peer runs beside us, see STREAM_POLL_BUDGET); the next poll is one or more microtasks later, so the
// handlers of what was delivered run (and answer) first and no epoll_wait is paid per poll (one trip
// through the event loop every MAX_BURST_MS keeps the process's other I/O and timers served). With
// spin off, a poll that drains the ring parks at once instead. When the ring is empty the SpinPolicy
// decides: spin (after a few microtask hops that let our own
// handlers finish, in short synchronous slices with polls between them, never through the event
// loop) or park: announce "parked" in shared memory, re-check the ring, and sleep until a DOORBELL
// frame arrives on the control connection. A producer rings only when it finds
// the reader parked, so under load no syscall is made per message. When the ring is full, frames wait
// in a local backlog (the only path that copies), and the producer asks the reader to ring back once it
// has made room.
import { logger } from "../../log.ts";
import { FRAME_HEADER_BYTES, FrameKind, maxFrameBody } from "../../rpc/frame.ts";
import { DEFAULT_SETTINGS } from "../../rpc/types.ts";
import { currentCpu } from "../../native/libc.ts";
import type { FrameSink, Transport, TransportStats } from "../types.ts";
import { CorruptSegmentError, RingReader, RingWriter, type RingSink } from "./ring.ts";
import type { ShmSegment } from "./segment.ts";
import { SpinPolicy, type SpinSetting } from "./spin.ts";

const log = logger("shm");
/**
 * Records handled per poll, and microtask hops before the next poll, while the peer answers in
 * parallel with us (we spin for it; see `streaming`). A poll hands its frames to handlers that answer
 * only a few `await`s later; a reader that delivered all 64 requests of a pipelined client before
 * letting any handler run published its first answer only after the whole batch, and the two
 * processes took turns (each idle - spinning past its budget, then parking - while the other worked
 * through 64 frames) instead of working side by side. Delivering 8 and letting their handlers run
 * first streams answers back while more requests arrive.
 */
const STREAM_POLL_BUDGET = 8;
const STREAM_DELIVERY_HOPS = 8;
/**
 * The same when the peer sleeps while we work (spin off, or the peer shares our CPU): nothing is
 * gained by answering early, and the extra polls and hops cost ~0.4 µs of CPU per call. Bounded so
 * that one busy peer cannot starve us.
 */
const BATCH_POLL_BUDGET = 256;
/** Microtask hops, without spinning, at the start of a wait and after each send during it (see idle). */
const YIELD_HOPS = 4;
/** First and longest synchronous spin slice between two polls, in ms (see idle). */
const SPIN_SLICE_MIN_MS = 0.001;
const SPIN_SLICE_MAX_MS = 0.02;
/** A gap this long between two clock reads of a spin means we were preempted (ms). */
const PREEMPTED_MS = 0.01;
/** Longest run of microtask-chained polls before one trip through the event loop, in ms. */
const MAX_BURST_MS = 0.5;
const EMPTY = new Uint8Array(0);

export interface ShmTransportOptions {
  segment: ShmSegment;
  /** The session's uds connection: carries doorbells; closing it ends the session. */
  control: Transport;
  spin?: SpinSetting;
  /** Largest frame body accepted from the peer (from the local max message size). */
  maxBodyBytes?: number;
  /** Largest frame body the peer accepts (from its HELLO). */
  peerMaxBodyBytes?: number;
}

interface Pending {
  kind: FrameKind;
  flags: number;
  callId: number;
  aux: number;
  body: Uint8Array;
}

export interface ShmStats extends TransportStats {
  doorbellsSent: number;
  doorbellsReceived: number;
  parks: number;
  spinHits: number;
  spinMisses: number;
  /**
   * µs spent in spin slices (polling the empty ring), from the spin loop's own clock reads; time the
   * kernel ran something else during a slice is not counted.
   */
  spinUs: number;
  /** Frames that found the ring full and waited in the local backlog. */
  backlogged: number;
}

export class ShmTransport implements Transport {
  readonly name = "shm" as const;
  readonly stats: ShmStats = {
    framesSent: 0,
    framesReceived: 0,
    bytesSent: 0,
    bytesReceived: 0,
    doorbellsSent: 0,
    doorbellsReceived: 0,
    parks: 0,
    spinHits: 0,
    spinMisses: 0,
    spinUs: 0,
    backlogged: 0,
  };
  closeError: Error | undefined;

  private readonly segment: ShmSegment;
  private readonly control: Transport;
  private readonly writer: RingWriter;
  private readonly reader: RingReader;
  private readonly spin: SpinPolicy;
  private readonly peerMaxBody: number;
  private sink: FrameSink | undefined;
  private isClosed = false;
  private scheduled = false;
  /**
   * The last wait spun for the peer, so it runs beside us on another CPU: deliver in small polls so
   * handlers answer while more arrives (see STREAM_POLL_BUDGET).
   */
  private streaming = false;
  /** Microtask hops left before the scheduled poll runs. */
  private hopsLeft = 0;
  /** performance.now() when the current chain of microtask polls began (0 = none). */
  private burstStart = 0;
  private parked = false;
  /**
   * performance.now() when the current wait began (0 = not waiting), and how much of its spin budget
   * is left (ms). The budget is spin time, not wall time: our own handlers running between two slices,
   * or the kernel running another task, do not use it up.
   */
  private waitStart = 0;
  private spinLeft = 0;
  /** performance.now() when the last wait ended (a hit, a miss, a doorbell): our work since then. */
  private busySince = 0;
  /** We rang the peer's doorbell since the last wait began (so the peer was asleep). */
  private rangSinceWait = false;
  private waitAfterRing = false;
  /** Spin slices so far in the current wait since we last sent something, and framesSent then. */
  private slices = 0;
  private sentMark = 0;
  private backlog: Pending[] = [];
  private backlogHead = 0;
  private backlogBytes = 0;
  private readonly ringSink: RingSink;

  constructor(opts: ShmTransportOptions) {
    this.segment = opts.segment;
    this.control = opts.control;
    const cap = opts.segment.info.ringBytes;
    const mine = opts.segment.ringOffsets(opts.segment.role);
    const theirs = opts.segment.ringOffsets(opts.segment.role === "app" ? "sidecar" : "app");
    const buf = opts.segment.buffer;
    this.writer = new RingWriter(buf, mine.control, mine.data, cap);
    this.reader = new RingReader(buf, theirs.control, theirs.data, cap, opts.maxBodyBytes ?? maxFrameBody(DEFAULT_SETTINGS.maxMessageBytes));
    this.peerMaxBody = opts.peerMaxBodyBytes ?? maxFrameBody(DEFAULT_SETTINGS.maxMessageBytes);
    this.spin = new SpinPolicy(opts.spin ?? "auto");
    // A reader that never spins does not keep its CPU published (see idle): say "unknown" once.
    if (this.spin.setting === "off") opts.segment.publishCpu(-1);
    this.ringSink = {
      onFrame: (kind, flags, callId, aux, body) => {
        this.stats.framesReceived++;
        this.stats.bytesReceived += FRAME_HEADER_BYTES + body.length;
        this.sink!.onFrame(kind, flags, callId, aux, body);
      },
    };
  }

  get bufferedBytes(): number {
    return this.backlogBytes;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  get role(): "app" | "sidecar" {
    return this.segment.role;
  }

  /** The adaptive spin budget right now (µs), for stats. */
  get spinBudgetUs(): number {
    return this.spin.currentUs;
  }

  start(sink: FrameSink): void {
    if (this.sink) throw new Error("ShmTransport.start called twice");
    this.sink = sink;
    if (this.isClosed) {
      sink.onClose(this.closeError);
      return;
    }
    // The app rings once so the sidecar sees the attach token and closes its memfd at once.
    if (this.segment.role === "app") this.ring();
    // First poll on a later turn of the event loop: whoever called start() (the channel) may still be
    // wiring up its handlers, and frames the peer sent already must not reach it before that.
    this.scheduled = true;
    this.busySince = performance.now();
    setImmediate(this.tick);
  }

  send(kind: FrameKind, flags: number, callId: number, aux: number, body: Uint8Array = EMPTY): void {
    if (this.isClosed) throw new Error(`shm transport is closed${this.closeError ? `: ${this.closeError.message}` : ""}`);
    if (body.length > this.peerMaxBody) {
      throw new RangeError(`frame body of ${body.length} bytes exceeds the ${this.peerMaxBody} bytes the peer accepts`);
    }
    this.stats.framesSent++;
    this.stats.bytesSent += FRAME_HEADER_BYTES + body.length;
    if (this.backlogHead === this.backlog.length) {
      let done: boolean;
      try {
        done = this.writer.writeFrame(kind, flags, callId, aux, body);
      } catch (e) {
        this.fail(e);
        return;
      }
      this.wakeReader();
      if (done) return;
    }
    // Ring full, or earlier frames still queued: keep a copy, in order (a half-written chunked frame
    // is first in the backlog and resumes where the writer left it).
    this.stats.backlogged++;
    this.backlog.push({ kind, flags, callId, aux, body: body.length ? body.slice() : EMPTY });
    this.backlogBytes += FRAME_HEADER_BYTES + body.length;
    this.awaitSpace();
  }

  /** A frame from the session's control connection: DOORBELL wakes the reader; nothing else is sent there. */
  onControlFrame(kind: FrameKind): void {
    if (kind === FrameKind.DOORBELL) this.onDoorbell();
  }

  /** The peer published records while we were parked, or made room we were waiting for. */
  onDoorbell(): void {
    this.stats.doorbellsReceived++;
    if (this.isClosed) return;
    this.parked = false;
    this.burstStart = 0;
    // Only the spin policy reads busySince (a reader that never spins has no use for the clock read).
    if (this.spin.setting !== "off") this.busySince = performance.now();
    this.run();
  }

  close(reason?: string): void {
    this.shutdown(reason ? new Error(reason) : undefined);
  }

  private shutdown(error: Error | undefined): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.closeError ??= error;
    this.reader.stopped = true;
    this.backlog = [];
    this.backlogHead = 0;
    this.backlogBytes = 0;
    try {
      this.segment.release();
    } catch (e) {
      log.error({ err: (e as Error).message }, `shm: releasing the segment failed: ${(e as Error).message}`);
    }
    if (!this.control.closed) this.control.close(this.closeError?.message);
    this.sink?.onClose(this.closeError);
  }

  private fail(e: unknown): void {
    if (this.isClosed) return;
    const err = e instanceof Error ? e : new Error(String(e));
    if (err instanceof CorruptSegmentError) {
      // No peer pid from the segment here: it is as untrusted as the bytes that were just rejected.
      log.error({ role: this.segment.role }, `${err.message}: closing the session`);
    } else {
      log.error({ err: err.message, stack: err.stack }, `shm transport failed: ${err.message}: closing the session`);
    }
    this.shutdown(err);
  }

  private ring(): void {
    if (this.control.closed) return;
    this.stats.doorbellsSent++;
    this.control.send(FrameKind.DOORBELL, 0, 0, 0);
  }

  /** After publishing: ring the reader's doorbell if (and only if) it is parked. */
  private wakeReader(): void {
    if (this.writer.takeParkedConsumer()) {
      this.rangSinceWait = true;
      this.ring();
    }
  }

  private awaitSpace(): void {
    // Need room for the largest record plus a wrap: then the next write cannot fail.
    for (;;) {
      try {
        if (this.writer.announceWaiting(2 * this.writer.maxRecord)) return;
      } catch (e) {
        this.fail(e);
        return;
      }
      if (!this.flushBacklog()) return;
    }
  }

  /** Writes queued frames into the ring. Returns true if it stopped because the ring is full. */
  private flushBacklog(): boolean {
    const hadBytes = this.backlogBytes;
    let full = false;
    while (this.backlogHead < this.backlog.length && !this.isClosed) {
      const f = this.backlog[this.backlogHead]!;
      let done: boolean;
      try {
        done = this.writer.writeFrame(f.kind, f.flags, f.callId, f.aux, f.body);
      } catch (e) {
        this.fail(e);
        return false;
      }
      if (!done) {
        full = true;
        break;
      }
      this.backlog[this.backlogHead++] = undefined as unknown as Pending;
      this.backlogBytes -= FRAME_HEADER_BYTES + f.body.length;
    }
    this.wakeReader();
    if (this.backlogHead === this.backlog.length) {
      this.backlog = [];
      this.backlogHead = 0;
    } else if (this.backlogHead > 1024 && this.backlogHead * 2 > this.backlog.length) {
      this.backlog = this.backlog.slice(this.backlogHead);
      this.backlogHead = 0;
    }
    if (hadBytes > 0 && this.backlogBytes === 0 && !this.isClosed) this.sink?.onWritable?.();
    return full;
  }

  /**
   * Polls again soon: `hops` chained microtasks later, so the handlers of what we just delivered
   * (microtasks queued behind us, a few `await`s deep) have had their turn, without a trip through the
   * event loop (each of which costs an epoll_wait).
   * After MAX_BURST_MS of chained polls we go through the event loop once, so sockets and timers
   * of the rest of the process are served.
   */
  private schedule(hops = 1, now = performance.now()): void {
    if (this.scheduled || this.isClosed) return;
    this.scheduled = true;
    if (this.burstStart === 0) this.burstStart = now;
    if (now - this.burstStart < MAX_BURST_MS) {
      this.hopsLeft = hops;
      queueMicrotask(this.microTick);
    } else {
      this.burstStart = 0;
      setImmediate(this.tick);
    }
  }

  private readonly microTick = (): void => {
    if (--this.hopsLeft > 0) {
      queueMicrotask(this.microTick);
      return;
    }
    this.scheduled = false;
    this.run();
  };

  private readonly tick = (): void => {
    this.scheduled = false;
    this.burstStart = 0;
    this.run();
  };

  /** One poll: drain, serve a waiting producer, flush our backlog, then yield, spin or park. */
  /** `seen`: performance.now() when a spin saw the records arrive (saves a clock read on the way). */
  private run(seen = 0): void {
    if (this.isClosed || !this.sink) return;
    try {
      if (this.segment.fdOpen && this.segment.appAttached()) this.segment.closeFd();
      const n = this.reader.poll(this.ringSink, this.streaming ? STREAM_POLL_BUDGET : BATCH_POLL_BUDGET);
      if (this.isClosed) return;
      if (n > 0 && this.reader.takeWaitingProducer()) this.ring();
      if (this.backlogHead < this.backlog.length && this.flushBacklog()) this.awaitSpace();
      if (this.isClosed) return;
      if (n > 0) {
        if (n < BATCH_POLL_BUDGET && this.spin.setting === "off") {
          // The ring is drained, and with spin off the next poll would park unless the peer published
          // in between, which on one CPU it cannot have (our handlers have not even run yet). Parking
          // now saves a microtask, a poll and a clock read per delivery (~0.7 us per round trip of
          // two processes on one CPU). park() re-checks the ring, so nothing published meanwhile is
          // missed; with the peer on another CPU, a frame it publishes while our handlers run costs a
          // doorbell that the extra poll might have saved.
          this.park();
          return;
        }
        // Let the frames' handlers (queued microtasks) run, then poll again.
        const now = seen || performance.now();
        if (this.waitStart !== 0) this.endWait(true, now);
        this.schedule(this.streaming ? STREAM_DELIVERY_HOPS : 1, now);
        return;
      }
      this.idle();
    } catch (e) {
      this.fail(e);
    }
  }

  private endWait(hit: boolean, now: number): void {
    if (hit) {
      this.stats.spinHits++;
      this.spin.hit((now - this.waitStart) * 1000);
    } else {
      this.stats.spinMisses++;
      this.spin.miss(this.waitAfterRing);
    }
    this.waitStart = 0;
    this.spinLeft = 0;
    this.busySince = now;
  }

  /**
   * The ring is empty: yield, spin a slice (if the policy says so) or park.
   *
   * A wait runs as a chain of polls through microtasks, never through the event loop (each turn of
   * which is an epoll_wait): first YIELD_HOPS microtask hops, so the handlers of what we just
   * delivered (queued microtasks, a few `await`s deep) run and send before we hold the thread; then
   * spin slices that start at SPIN_SLICE_MIN_MS and double up to SPIN_SLICE_MAX_MS, so work of our
   * own that is still queued waits at most about as long as it has already been quiet. Whenever we
   * sent something since the previous poll, our own work is still flowing: back to plain hops.
   * (spin → yield → park of Aeron/LMAX idle strategies, where "yield" is to our own microtasks.)
   */
  private idle(): void {
    const now = performance.now();
    if (this.waitStart === 0) {
      this.waitAfterRing = this.rangSinceWait;
      this.rangSinceWait = false;
      if (this.spin.setting === "off") {
        // Only a spinning peer reads our CPU (to see whether spinning could pay off): skip the syscall.
        this.park();
        return;
      }
      this.waitStart = now;
      this.spinLeft = -1;
      this.slices = 0;
      this.sentMark = this.stats.framesSent;
      // While we spin for a peer on another CPU, the budget is decided after the first hops, not
      // here: in a closed loop our caller's next request is still a few microtasks from being sent,
      // and getcpu and the policy would delay it. Otherwise (last time we parked at once: the peer
      // shares our CPU) park at once again if that is still the answer - the hops and extra polls
      // cost ~5% more CPU per call there.
      if (!this.streaming && !this.decideBudget()) return;
      this.schedule(YIELD_HOPS, now);
      return;
    }
    if (this.stats.framesSent !== this.sentMark) {
      this.sentMark = this.stats.framesSent;
      this.slices = 0;
      this.schedule(YIELD_HOPS, now);
      return;
    }
    if (this.spinLeft < 0 && !this.decideBudget()) return;
    // A doorbell we rang waits in the control socket's buffer for the end of this event-loop turn
    // (so a burst of frames costs one write). Spinning holds that turn, and the peer we rang sleeps
    // until the doorbell arrives: write it out first. (Without this, every wait of a spinning pair
    // became a miss: 255 us instead of 4 us per round trip.)
    if (this.control.bufferedBytes > 0) this.control.flushNow?.();
    const slice = Math.min(SPIN_SLICE_MAX_MS, SPIN_SLICE_MIN_MS * 2 ** this.slices++, this.spinLeft);
    const reader = this.reader;
    const start = now;
    let end = start + slice;
    let t = start;
    let stolen = 0;
    for (;;) {
      // Several looks per clock read (one read costs ~10 of them): the records are seen sooner.
      if (reader.hasData() || reader.hasData() || reader.hasData() || reader.hasData()) {
        this.spun(t - start - stolen);
        this.run(t); // that poll finds the records and ends the wait as a hit
        return;
      }
      const t2 = performance.now();
      if (t2 - t > PREEMPTED_MS && stolen < MAX_BURST_MS) {
        // The kernel ran something else meanwhile: that time was not spent spinning, and the peer may
        // have answered during it, so it neither uses up the budget nor ends the slice unchecked.
        // (Bounded: a throttled process must still get back to its event loop.)
        stolen += t2 - t;
        end += t2 - t;
      }
      t = t2;
      if (t >= end) break;
    }
    this.spun(t - start - stolen);
    if (this.spinLeft <= 0) this.giveUp(t);
    else this.schedule(1, t);
  }

  /** A spin slice took `ms` of spin time: off the wait's budget, onto the stats. */
  private spun(ms: number): void {
    this.spinLeft -= ms;
    this.stats.spinUs += ms * 1000;
  }

  /** Sets the current wait's spin budget; false if it is 0 (then we parked). */
  private decideBudget(): boolean {
    const cpu = currentCpu();
    this.segment.publishCpu(cpu);
    const budgetUs = this.spin.budgetUs(cpu >= 0 && cpu === this.segment.peerCpu(), (this.waitStart - this.busySince) * 1000);
    this.streaming = budgetUs > 0;
    if (budgetUs <= 0) {
      this.waitStart = 0;
      this.spinLeft = 0;
      this.park();
      return false;
    }
    this.spinLeft = budgetUs / 1000;
    return true;
  }

  /** The spin budget ran out with the ring still empty: a miss; park. */
  private giveUp(now: number): void {
    this.endWait(false, now);
    this.park();
  }

  private park(): void {
    this.reader.park();
    if (this.reader.hasData()) {
      this.reader.unpark();
      this.schedule();
      return;
    }
    this.stats.parks++;
    this.parked = true;
    this.burstStart = 0;
  }

  /** True while the reader sleeps waiting for a doorbell (for tests and stats). */
  get isParked(): boolean {
    return this.parked;
  }
}
