// RpalTransport: frames to the peer through rpal_write_ptrs, frames from the peer out of the inbox ring
// the native receiver thread fills. Implements Transport, so the RPC channel runs over it unchanged.
//
// Send: frames are appended to this process's outbox (a byte ring the peer can address), and once per
// microtask one rpal_write_ptrs names the new bytes as (pointer, length) pairs — that call is the RPAL
// call: on an RPAL kernel the peer's receiver runs at once and copies them. The peer releases outbox
// space by storing its position in the outbox's control block; librpal's queue holds 32 words, so at
// most 32 words are in flight and a sender over the limit asks for credit (the peer's receiver sends
// one byte on the data socket, our receiver wakes us). Receive: drained exactly like shm's ring (a
// bounded poll, then "parked" + re-check, and a wake-up byte from our receiver thread only when parked).
import type { Socket } from "bun";
import { toArrayBuffer, type Pointer } from "bun:ffi";
import { FRAME_HEADER_BYTES, type FrameKind, writeFrameHeader } from "../../rpc/frame.ts";
import { CorruptSegmentError, RingReader } from "../shm/ring.ts";
import type { FrameSink, Transport, TransportStats } from "../types.ts";
import { RPAL_CACHE_FULL, RPAL_QUEUE_PUT_FAILED, RpalError } from "./errors.ts";
import { RPAL_MAX_WORDS, type RpalProcess } from "./librpal.ts";
import {
  INBOX_CTRL_BYTES,
  OUTBOX_CTRL_BYTES,
  OUTBOX_RELEASED,
  OUTBOX_WANT_CREDIT,
  SessionState,
  type Shim,
  WORDS_MAGIC_HI,
} from "./shim.ts";

const POLL_BUDGET = 256;
const HIGH_WATER_BYTES = 8 * 1024 * 1024;
const TWO32 = 4294967296;
const MAX_MSG_WORDS = 5; // header + two (pointer, length) pairs

export interface RpalStats extends TransportStats {
  /** rpal_write_ptrs calls (RPAL calls) made. */
  rpalCalls: number;
  /** Wake-ups of the JS thread by the receiver thread. */
  wakeups: number;
  /** Times the sender ran out of in-flight words or outbox space and asked for credit. */
  creditWaits: number;
  /** Times our receiver thread found the inbox full and waited for JS (as last seen by JS). */
  receiverStalls: number;
}

export interface RpalTransportInit {
  proc: RpalProcess;
  shim: Shim;
  session: number;
  peerId: number;
  rpalfd: bigint;
  inboxBytes: number;
  outboxBytes: number;
  maxBodyBytes: number;
  peerMaxBodyBytes: number;
}

export class RpalTransport implements Transport {
  readonly name = "rpal" as const;
  readonly stats: RpalStats = {
    framesSent: 0,
    framesReceived: 0,
    bytesSent: 0,
    bytesReceived: 0,
    doorbellsSent: 0,
    doorbellsReceived: 0,
    rpalCalls: 0,
    wakeups: 0,
    creditWaits: 0,
    receiverStalls: 0,
  };
  closeError: Error | undefined;

  private sink: FrameSink | undefined;
  private isClosed = false;
  private reader: RingReader | undefined;
  private outCtrl: Int32Array | undefined;
  private outData: Uint8Array | undefined;
  private outView: DataView | undefined;
  private readonly outAddr: number;
  private readonly cap: number;
  private readonly mask: number;
  private head = 0;
  private flushed = 0;
  private released = 0;
  // In-flight rpal_write_ptrs calls: the stream position each ends at and the words it used.
  private readonly inflightEnd = new Float64Array(RPAL_MAX_WORDS);
  private readonly inflightWords = new Uint8Array(RPAL_MAX_WORDS);
  private inflightHead = 0;
  private inflightCount = 0;
  private wordsInFlight = 0;
  private readonly words = new Uint32Array(2 * MAX_MSG_WORDS);
  private readonly scratch = new Uint8Array(FRAME_HEADER_BYTES);
  private readonly scratchView = new DataView(this.scratch.buffer);
  private pending: Uint8Array[] = [];
  private pendingOff = 0;
  private pendingBytes = 0;
  private flushScheduled = false;
  /**
   * Out of words (or the peer's queue was full): a flush now would only find the same. The peer's
   * receiver wakes us with credit (onWake), or the 1 ms retry fires; until then send() only queues.
   * Without this every send while waiting cost a microtask and a credit request: 388,640 credit
   * waits counted for 4,588 rpal calls in a long stream.
   */
  private awaitingCredit = false;
  private draining = false;
  private wasHigh = false;
  private wake: Socket<undefined> | undefined;
  private readonly ringSink = {
    onFrame: (kind: FrameKind, flags: number, callId: number, aux: number, body: Uint8Array) => {
      this.stats.framesReceived++;
      this.stats.bytesReceived += FRAME_HEADER_BYTES + body.byteLength;
      this.sink!.onFrame(kind, flags, callId, aux, body);
    },
  };

  /** The session's wiring (peer id, rpalfd, …); public so tests can play a hostile sender. */
  constructor(readonly init: RpalTransportInit) {
    const { shim, session } = init;
    this.cap = init.outboxBytes;
    this.mask = this.cap - 1;
    const outPtr = shim.outbox(session);
    this.outAddr = (outPtr as unknown as number) + OUTBOX_CTRL_BYTES;
    const out = toArrayBuffer(outPtr, 0, OUTBOX_CTRL_BYTES + this.cap);
    this.outCtrl = new Int32Array(out, 0, OUTBOX_CTRL_BYTES / 4);
    this.outData = new Uint8Array(out, OUTBOX_CTRL_BYTES, this.cap);
    this.outView = new DataView(out, OUTBOX_CTRL_BYTES, this.cap);
    const inbox = toArrayBuffer(shim.inbox(session) as Pointer, 0, INBOX_CTRL_BYTES + init.inboxBytes);
    this.reader = new RingReader(inbox, 0, INBOX_CTRL_BYTES, init.inboxBytes, init.maxBodyBytes);
    this.reader.park();
  }

  /** Hands over the wake-up socket (our end of the receiver thread's socketpair). */
  attachWake(socket: Socket<undefined>): void {
    this.wake = socket;
  }

  get bufferedBytes(): number {
    return this.pendingBytes + ((this.head - this.released) >>> 0);
  }

  get closed(): boolean {
    return this.isClosed;
  }

  start(sink: FrameSink): void {
    if (this.sink) throw new Error("RpalTransport.start called twice");
    this.sink = sink;
    if (this.isClosed) {
      sink.onClose(this.closeError);
      return;
    }
    this.onWake(); // records may have arrived before start
  }

  send(kind: FrameKind, flags: number, callId: number, aux: number, body?: Uint8Array): void {
    if (this.isClosed) throw new Error(`rpal transport is closed${this.closeError ? `: ${this.closeError.message}` : ""}`);
    const len = body ? body.byteLength : 0;
    if (len > this.init.peerMaxBodyBytes) {
      throw new Error(`frame body of ${len} bytes exceeds the ${this.init.peerMaxBodyBytes} bytes the peer accepts`);
    }
    const need = FRAME_HEADER_BYTES + len;
    this.stats.framesSent++;
    this.stats.bytesSent += need;
    if (this.pending.length === 0 && this.space() >= need) {
      this.putHeader(kind, flags, callId, aux, len);
      if (len > 0) this.putBytes(body!, 0, len);
    } else {
      // Outbox full: keep a copy and stream it in as the peer releases space (the only copying path).
      const f = new Uint8Array(need);
      writeFrameHeader(new DataView(f.buffer), 0, len, kind, flags, callId, aux);
      if (len > 0) f.set(body!, FRAME_HEADER_BYTES);
      this.pending.push(f);
      this.pendingBytes += need;
      this.drainPending();
      if (this.bufferedBytes > HIGH_WATER_BYTES) this.wasHigh = true;
    }
    if (!this.flushScheduled && !this.awaitingCredit) {
      this.flushScheduled = true;
      queueMicrotask(this.flush);
    }
  }

  close(reason?: string): void {
    this.shutdown(reason ? new Error(reason) : undefined);
  }

  /** Not used: rpal signals on its own data socket; frames never travel on the control connection. */
  onControlFrame(): void {}

  /** The receiver thread wrote to our wake socket: the peer's state changed, records arrived, or credit. */
  onWake(): void {
    if (this.isClosed || !this.sink) return;
    this.stats.wakeups++;
    this.stats.receiverStalls = this.init.shim.sym.rms_session_stalls(this.init.session);
    const st = this.init.shim.sym.rms_session_state(this.init.session);
    if (st === SessionState.FAILED || st === SessionState.CLOSED) {
      this.drainInbox(); // deliver what the peer sent before it went
      this.shutdown(new Error(`rpal session ended: ${this.init.shim.error(this.init.session)}`));
      return;
    }
    this.drainInbox();
    this.flush();
  }

  private space(): number {
    const rel = Atomics.load(this.outCtrl!, OUTBOX_RELEASED) >>> 0;
    if (rel !== this.released) {
      // The peer may only move its position forward, and not past what we handed it.
      if (((rel - this.released) >>> 0) > ((this.flushed - this.released) >>> 0)) {
        this.shutdown(new CorruptSegmentError(`the rpal peer released outbox position ${rel}, outside ${this.released}..${this.flushed}`));
        return 0;
      }
      this.released = rel;
      this.retire();
    }
    return this.cap - ((this.head - this.released) >>> 0);
  }

  private retire(): void {
    while (this.inflightCount > 0) {
      const end = this.inflightEnd[this.inflightHead]!;
      // `end` is released once the released position has reached it (positions wrap mod 2^32).
      if (((this.released - end) >>> 0) > ((this.flushed - end) >>> 0)) break;
      this.wordsInFlight -= this.inflightWords[this.inflightHead]!;
      this.inflightHead = (this.inflightHead + 1) % RPAL_MAX_WORDS;
      this.inflightCount--;
    }
  }

  private putHeader(kind: FrameKind, flags: number, callId: number, aux: number, len: number): void {
    const idx = this.head & this.mask;
    if (this.cap - idx >= FRAME_HEADER_BYTES) {
      writeFrameHeader(this.outView!, idx, len, kind, flags, callId, aux);
      this.head = (this.head + FRAME_HEADER_BYTES) >>> 0;
    } else {
      writeFrameHeader(this.scratchView, 0, len, kind, flags, callId, aux);
      this.putBytes(this.scratch, 0, FRAME_HEADER_BYTES);
    }
  }

  /** Copies src[off, off+n) to the outbox at the write position (n must fit). */
  private putBytes(src: Uint8Array, off: number, n: number): void {
    const data = this.outData!;
    const idx = this.head & this.mask;
    const first = Math.min(n, this.cap - idx);
    if (off === 0 && first === src.byteLength) data.set(src, idx);
    else data.set(src.subarray(off, off + first), idx);
    if (n > first) data.set(src.subarray(off + first, off + n), 0);
    this.head = (this.head + n) >>> 0;
  }

  private drainPending(): void {
    while (this.pending.length > 0) {
      const free = this.space();
      if (free === 0 || this.isClosed) return;
      const f = this.pending[0]!;
      const n = Math.min(free, f.byteLength - this.pendingOff);
      this.putBytes(f, this.pendingOff, n);
      this.pendingOff += n;
      this.pendingBytes -= n;
      if (this.pendingOff === f.byteLength) {
        this.pending.shift();
        this.pendingOff = 0;
      }
    }
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    this.awaitingCredit = false;
    if (this.isClosed) return;
    this.drainPending();
    if (this.head !== this.flushed) {
      this.space(); // retire what the peer released
      const total = (this.head - this.flushed) >>> 0;
      const idx = this.flushed & this.mask;
      const first = Math.min(total, this.cap - idx);
      const pairs = total > first ? 2 : 1;
      const n = 1 + 2 * pairs;
      if (this.wordsInFlight + n > RPAL_MAX_WORDS || this.inflightCount === RPAL_MAX_WORDS) {
        this.waitForCredit();
        return;
      }
      const w = this.words;
      w[0] = this.head;
      w[1] = WORDS_MAGIC_HI | pairs;
      const addr = this.outAddr + idx;
      w[2] = addr % TWO32;
      w[3] = Math.floor(addr / TWO32);
      w[4] = first;
      w[5] = 0;
      if (pairs === 2) {
        w[6] = this.outAddr % TWO32;
        w[7] = Math.floor(this.outAddr / TWO32);
        w[8] = total - first;
        w[9] = 0;
      }
      const r = this.init.proc.lib.rpal_write_ptrs(this.init.peerId, this.init.rpalfd, w, n);
      this.stats.rpalCalls++;
      if (r < 0) {
        if (-r === RPAL_QUEUE_PUT_FAILED || -r === RPAL_CACHE_FULL) {
          // The peer's queue is fuller than our count says (it has not read yet): retry shortly.
          this.waitForCredit();
          setTimeout(() => this.flush(), 1);
          return;
        }
        const st = this.init.shim.sym.rms_session_state(this.init.session);
        if (st === SessionState.CLOSED || st === SessionState.FAILED) {
          // The peer went away while we sent (its service was released): report that, not the symptom.
          this.shutdown(new Error(`rpal session ended: ${this.init.shim.error(this.init.session)}`));
        } else {
          this.shutdown(new RpalError("rpal_write_ptrs", -r, `to service ${this.init.peerId}`));
        }
        return;
      }
      const slot = (this.inflightHead + this.inflightCount) % RPAL_MAX_WORDS;
      this.inflightEnd[slot] = this.head;
      this.inflightWords[slot] = n;
      this.inflightCount++;
      this.wordsInFlight += n;
      this.flushed = this.head;
    }
    if (this.pending.length > 0) this.waitForCredit();
    else if (this.wasHigh && this.bufferedBytes < HIGH_WATER_BYTES / 2) {
      this.wasHigh = false;
      this.sink?.onWritable?.();
    }
  };

  /** Asks the peer's receiver to send credit when it releases space; re-checks to avoid a lost wake-up. */
  private waitForCredit(): void {
    this.stats.creditWaits++;
    this.awaitingCredit = true;
    Atomics.store(this.outCtrl!, OUTBOX_WANT_CREDIT, 1);
    const before = this.released;
    this.space();
    if (this.released !== before) {
      Atomics.store(this.outCtrl!, OUTBOX_WANT_CREDIT, 0);
      this.awaitingCredit = false;
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        queueMicrotask(this.flush);
      }
    }
  }

  private readonly drainLater = (): void => this.drainInbox();

  private drainInbox(): void {
    const reader = this.reader;
    if (this.draining || !reader || !this.sink) return;
    this.draining = true;
    try {
      for (;;) {
        reader.unpark();
        const n = reader.poll(this.ringSink, POLL_BUDGET);
        if (this.isClosed) return;
        if (reader.takeWaitingProducer()) {
          this.init.shim.sym.rms_session_kick(this.init.session);
          this.stats.receiverStalls = this.init.shim.sym.rms_session_stalls(this.init.session);
        }
        if (n === POLL_BUDGET) {
          setImmediate(this.drainLater); // let handlers and other I/O run
          return;
        }
        if (n === 0) {
          reader.park();
          if (!reader.hasData()) return;
        }
      }
    } catch (e) {
      this.shutdown(e instanceof CorruptSegmentError ? e : new Error(`rpal transport: ${(e as Error).message}`, { cause: e }));
    } finally {
      this.draining = false;
    }
  }

  private shutdown(error?: Error): void {
    if (this.isClosed) return;
    this.isClosed = true;
    if (error && !this.closeError) this.closeError = error;
    if (this.reader) this.reader.stopped = true;
    const { shim, session } = this.init;
    shim.sym.rms_session_close(session);
    this.wake?.end();
    // Views over the rings must be gone before the shim unmaps them; a poll may still be on the stack.
    setImmediate(() => {
      this.reader = undefined;
      this.outCtrl = undefined;
      this.outData = undefined;
      this.outView = undefined;
      shim.sym.rms_session_free(session);
    });
    this.sink?.onClose(this.closeError);
  }
}
