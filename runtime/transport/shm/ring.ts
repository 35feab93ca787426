// A single-producer/single-consumer ring of frames in shared memory.
//
// Control block (RING_CONTROL_BYTES, each word on its own 64-byte cache line so the two sides never
// write the same line):
//   line 0  head     producer position: bytes ever published (u32, wraps mod 2^32)
//   line 1  tail     consumer position: bytes ever consumed
//   line 2  parked   consumer sets 1 before it sleeps; the producer swaps it to 0 and rings the doorbell
//   line 3  waiting  producer sets 1 when the ring is full; the consumer swaps it to 0 and rings back
// Data: `capacity` bytes (a power of two); index = position & (capacity - 1).
//
// Record: 8-byte header [u32 payloadLength][u8 type][3 bytes 0] + payload, padded to 8 bytes.
// A payloadLength of 0xFFFFFFFF is the wrap marker: the rest of the ring up to its end is skipped.
// type WHOLE: payload = 16-byte frame header + body. A frame too big for one record (more than a
// quarter of the ring) is chunked: FIRST (frame header + start of the body), MIDDLE…, LAST.
//
// Positions are kept locally by their owner and only published to shared memory; whatever is read
// from the other side (its position, lengths, types, frame headers) is validated before use, and any
// inconsistency throws CorruptSegmentError. Nothing here allocates per message except the subarray
// view handed to the sink for a non-empty body.
import { FRAME_HEADER_BYTES, readFrameHeader, newFrameHeader, FrameError, type FrameKind } from "../../rpc/frame.ts";

export const CACHE_LINE = 64;
export const RING_CONTROL_BYTES = 4 * CACHE_LINE;
export const RECORD_HEADER_BYTES = 8;
const WRAP_MARKER = 0xffffffff;
const HEAD = 0;
const TAIL = CACHE_LINE / 4;
const PARKED = (2 * CACHE_LINE) / 4;
const WAITING = (3 * CACHE_LINE) / 4;

export const RecordType = { WHOLE: 1, FIRST: 2, MIDDLE: 3, LAST: 4 } as const;

export const MIN_RING_BYTES = 4096;
/**
 * A writer past this ring index that finds the ring empty starts over at index 0 (a wrap marker, as at
 * the ring's end): while the reader keeps up, records stay in the ring's first few KiB, whose cache
 * lines and pages are still hot, instead of walking through the whole ring (1 MiB by default).
 */
export const REWIND_INDEX = 8192;
export const MAX_RING_BYTES = 1 << 30;

/** The segment holds bytes that contradict the protocol: a broken or hostile peer. */
export class CorruptSegmentError extends Error {
  override name = "CorruptSegmentError";
  constructor(detail: string) {
    super(`shm segment corrupt: ${detail}`);
  }
}

export function validRingBytes(n: number): boolean {
  return Number.isInteger(n) && n >= MIN_RING_BYTES && n <= MAX_RING_BYTES && (n & (n - 1)) === 0;
}

function align8(n: number): number {
  return (n + 7) & ~7;
}

const EMPTY = new Uint8Array(0);

export interface RingSink {
  onFrame(kind: FrameKind, flags: number, callId: number, aux: number, body: Uint8Array): void;
}

class RingBase {
  protected readonly ctrl: Int32Array;
  protected readonly bytes: Uint8Array;
  protected readonly view: DataView;
  protected readonly mask: number;
  /** Largest record (header + payload, aligned); bigger frames are chunked. */
  readonly maxRecord: number;
  readonly maxPayload: number;

  constructor(
    buffer: ArrayBuffer,
    controlOffset: number,
    dataOffset: number,
    readonly capacity: number,
  ) {
    if (!validRingBytes(capacity)) {
      throw new RangeError(`ring capacity ${capacity} must be a power of two between ${MIN_RING_BYTES} and ${MAX_RING_BYTES}`);
    }
    if (controlOffset % CACHE_LINE !== 0 || dataOffset % CACHE_LINE !== 0) {
      throw new RangeError(`ring offsets must be ${CACHE_LINE}-byte aligned (control ${controlOffset}, data ${dataOffset})`);
    }
    if (dataOffset + capacity > buffer.byteLength || controlOffset + RING_CONTROL_BYTES > buffer.byteLength) {
      throw new RangeError(`ring does not fit in a buffer of ${buffer.byteLength} bytes`);
    }
    this.ctrl = new Int32Array(buffer, controlOffset, RING_CONTROL_BYTES / 4);
    this.bytes = new Uint8Array(buffer, dataOffset, capacity);
    this.view = new DataView(buffer, dataOffset, capacity);
    this.mask = capacity - 1;
    this.maxRecord = capacity >>> 2;
    this.maxPayload = this.maxRecord - RECORD_HEADER_BYTES;
  }
}

/** The producer end. Only one writer per ring. */
export class RingWriter extends RingBase {
  private head = 0;
  private tailSeen = 0;
  /** Position at which the writer next looks whether the ring is empty (see REWIND_INDEX). */
  private nextRewindCheck = 0;
  /** Body bytes of the current frame already written as chunks (a frame is resumed by calling again). */
  private partial = 0;

  /** Starts from the positions currently in the control block (both 0 in a fresh segment). */
  constructor(buffer: ArrayBuffer, controlOffset: number, dataOffset: number, capacity: number) {
    super(buffer, controlOffset, dataOffset, capacity);
    this.head = Atomics.load(this.ctrl, HEAD) >>> 0;
    this.tailSeen = this.head;
    this.nextRewindCheck = this.head;
  }

  /** Bytes published but not yet consumed, as last seen. */
  get used(): number {
    return (this.head - this.tailSeen) >>> 0;
  }

  /** True while a chunked frame is half written: the next writeFrame must continue that same frame. */
  get midFrame(): boolean {
    return this.partial > 0;
  }

  private refreshTail(): void {
    const tail = Atomics.load(this.ctrl, TAIL) >>> 0;
    const used = (this.head - tail) >>> 0;
    // The consumer can only move its position forward, up to ours.
    if (used > this.capacity || ((this.head - this.tailSeen) >>> 0) < ((tail - this.tailSeen) >>> 0) || (tail & 7) !== 0) {
      throw new CorruptSegmentError(
        `consumer position ${tail} is out of range (producer at ${this.head}, capacity ${this.capacity})`,
      );
    }
    this.tailSeen = tail;
  }

  /** Makes room for a record of `size` bytes at the write position; false if the ring is too full. */
  private reserve(size: number): boolean {
    let idx = this.head & this.mask;
    if (idx >= REWIND_INDEX && idx >= size && ((this.head - this.nextRewindCheck) | 0) >= 0) {
      // At most one look at the reader's position per REWIND_INDEX bytes written: while a spinning
      // reader on another CPU moves it, every read of that cache line is a transfer between cores.
      this.nextRewindCheck = (this.head + REWIND_INDEX) >>> 0;
      this.refreshTail();
      if (this.tailSeen === this.head) {
        this.view.setUint32(idx, WRAP_MARKER, true);
        this.head = (this.head + this.capacity - idx) >>> 0;
        idx = 0;
      }
    }
    const contiguous = this.capacity - idx;
    const need = size <= contiguous ? size : contiguous + size;
    if (this.capacity - this.used < need) {
      this.refreshTail();
      if (this.capacity - this.used < need) return false;
    }
    if (size > contiguous) {
      this.view.setUint32(idx, WRAP_MARKER, true);
      this.head = (this.head + contiguous) >>> 0;
    }
    return true;
  }

  /**
   * Writes as much of one frame as fits. Returns true once the whole frame is in the ring; false means
   * "ring full, call again with the same frame later" (progress is kept for chunked frames).
   */
  writeFrame(kind: FrameKind, flags: number, callId: number, aux: number, body: Uint8Array): boolean {
    const bodyLength = body.length;
    if (this.partial === 0 && FRAME_HEADER_BYTES + bodyLength <= this.maxPayload) {
      const payload = FRAME_HEADER_BYTES + bodyLength;
      const size = align8(RECORD_HEADER_BYTES + payload);
      if (!this.reserve(size)) return false;
      const at = this.head & this.mask;
      this.putRecordHeader(at, payload, RecordType.WHOLE);
      this.putFrameHeader(at + RECORD_HEADER_BYTES, bodyLength, kind, flags, callId, aux);
      if (bodyLength > 0) this.bytes.set(body, at + RECORD_HEADER_BYTES + FRAME_HEADER_BYTES);
      this.publish(size);
      return true;
    }
    while (this.partial < bodyLength || (this.partial === 0 && bodyLength === 0)) {
      const first = this.partial === 0;
      const room = first ? this.maxPayload - FRAME_HEADER_BYTES : this.maxPayload;
      const chunk = Math.min(room, bodyLength - this.partial);
      const last = this.partial + chunk === bodyLength;
      const payload = (first ? FRAME_HEADER_BYTES : 0) + chunk;
      const size = align8(RECORD_HEADER_BYTES + payload);
      if (!this.reserve(size)) return false;
      const at = this.head & this.mask;
      let p = at + RECORD_HEADER_BYTES;
      this.putRecordHeader(at, payload, first ? RecordType.FIRST : last ? RecordType.LAST : RecordType.MIDDLE);
      if (first) {
        this.putFrameHeader(p, bodyLength, kind, flags, callId, aux);
        p += FRAME_HEADER_BYTES;
      }
      this.bytes.set(body.subarray(this.partial, this.partial + chunk), p);
      this.publish(size);
      this.partial = last ? 0 : this.partial + chunk;
      if (last) return true;
    }
    this.partial = 0;
    return true;
  }

  private putRecordHeader(at: number, payload: number, type: number): void {
    this.view.setUint32(at, payload, true);
    this.view.setUint32(at + 4, type, true);
  }

  private putFrameHeader(at: number, bodyLength: number, kind: number, flags: number, callId: number, aux: number): void {
    const v = this.view;
    v.setUint32(at, bodyLength, true);
    v.setUint8(at + 4, kind);
    v.setUint8(at + 5, flags);
    v.setUint16(at + 6, 0, true);
    v.setUint32(at + 8, callId, true);
    v.setUint32(at + 12, aux >>> 0, true);
  }

  private publish(size: number): void {
    this.head = (this.head + size) >>> 0;
    Atomics.store(this.ctrl, HEAD, this.head | 0);
  }

  /** After publishing: true if the consumer was parked (and is now marked awake): ring its doorbell. */
  takeParkedConsumer(): boolean {
    return Atomics.load(this.ctrl, PARKED) === 1 && Atomics.compareExchange(this.ctrl, PARKED, 1, 0) === 1;
  }

  /** Announces that the producer waits for space; false if space appeared meanwhile (no need to wait). */
  announceWaiting(needBytes: number): boolean {
    Atomics.store(this.ctrl, WAITING, 1);
    this.refreshTail();
    if (this.capacity - this.used >= Math.min(needBytes, this.capacity)) {
      Atomics.compareExchange(this.ctrl, WAITING, 1, 0);
      return false;
    }
    return true;
  }
}

/** The consumer end. Only one reader per ring. */
export class RingReader extends RingBase {
  private tail = 0;
  private readonly header = newFrameHeader();
  private assembly: Uint8Array = EMPTY;
  private assembled = 0;
  private asmLength = 0;
  private asmKind = 0 as FrameKind;
  private asmFlags = 0;
  private asmCallId = 0;
  private asmAux = 0;
  private inFrame = false;
  /** Set by the owner (e.g. from inside a sink callback) to make poll() return at once. */
  stopped = false;

  constructor(
    buffer: ArrayBuffer,
    controlOffset: number,
    dataOffset: number,
    capacity: number,
    /** Largest frame body accepted (the local max message size). */
    private readonly maxBody: number,
  ) {
    super(buffer, controlOffset, dataOffset, capacity);
    this.tail = Atomics.load(this.ctrl, TAIL) >>> 0;
  }

  /** Bytes the producer has published that are not consumed yet (validated). */
  available(): number {
    const head = Atomics.load(this.ctrl, HEAD) >>> 0;
    const avail = (head - this.tail) >>> 0;
    if (avail > this.capacity || (head & 7) !== 0) {
      throw new CorruptSegmentError(
        `producer position ${head} is out of range (consumer at ${this.tail}, capacity ${this.capacity})`,
      );
    }
    return avail;
  }

  /** Cheap check used while spinning: is anything published? (No validation: poll() validates.) */
  hasData(): boolean {
    return (Atomics.load(this.ctrl, HEAD) >>> 0) !== this.tail;
  }

  /**
   * Delivers up to `budget` records' worth of frames to `sink`. Returns the number of records consumed
   * (0 = ring empty). Throws CorruptSegmentError on anything inconsistent.
   */
  poll(sink: RingSink, budget: number): number {
    let avail = this.available();
    let records = 0;
    const v = this.view;
    while (avail > 0 && records < budget && !this.stopped) {
      const idx = this.tail & this.mask;
      const contiguous = this.capacity - idx;
      const payload = v.getUint32(idx, true);
      if (payload === WRAP_MARKER) {
        if (avail < contiguous) throw new CorruptSegmentError(`wrap marker at ${idx} but only ${avail} bytes published`);
        this.advance(contiguous);
        avail -= contiguous;
        continue;
      }
      if (payload > this.maxPayload) {
        throw new CorruptSegmentError(`record length ${payload} at ${idx} exceeds the ring's record limit ${this.maxPayload}`);
      }
      const size = align8(RECORD_HEADER_BYTES + payload);
      if (size > contiguous || size > avail) {
        throw new CorruptSegmentError(
          `record of ${size} bytes at ${idx} runs past ${size > contiguous ? "the ring's end" : "the published position"}`,
        );
      }
      const type = v.getUint32(idx + 4, true);
      const p = idx + RECORD_HEADER_BYTES;
      this.consumeRecord(sink, type, p, payload, idx);
      records++;
      this.advance(size);
      avail -= size;
    }
    return records;
  }

  private advance(n: number): void {
    this.tail = (this.tail + n) >>> 0;
    Atomics.store(this.ctrl, TAIL, this.tail | 0);
  }

  private readFrame(p: number, payload: number, idx: number): void {
    if (payload < FRAME_HEADER_BYTES) {
      throw new CorruptSegmentError(`record at ${idx} of ${payload} bytes is too short for a frame header`);
    }
    try {
      readFrameHeader(this.view, p, this.maxBody, this.header);
    } catch (e) {
      if (e instanceof FrameError) throw new CorruptSegmentError(`bad frame header at ${idx}: ${e.message}`);
      throw e;
    }
  }

  private consumeRecord(sink: RingSink, type: number, p: number, payload: number, idx: number): void {
    const h = this.header;
    switch (type) {
      case RecordType.WHOLE: {
        if (this.inFrame) throw new CorruptSegmentError(`whole frame at ${idx} inside a chunked frame`);
        this.readFrame(p, payload, idx);
        if (h.bodyLength !== payload - FRAME_HEADER_BYTES) {
          throw new CorruptSegmentError(`frame at ${idx} says ${h.bodyLength} body bytes but its record holds ${payload - FRAME_HEADER_BYTES}`);
        }
        const start = p + FRAME_HEADER_BYTES;
        const body = h.bodyLength === 0 ? EMPTY : this.bytes.subarray(start, start + h.bodyLength);
        sink.onFrame(h.kind, h.flags, h.callId, h.aux, body);
        return;
      }
      case RecordType.FIRST: {
        if (this.inFrame) throw new CorruptSegmentError(`first chunk at ${idx} inside a chunked frame`);
        this.readFrame(p, payload, idx);
        const chunk = payload - FRAME_HEADER_BYTES;
        if (chunk >= h.bodyLength) {
          throw new CorruptSegmentError(`first chunk at ${idx} holds ${chunk} of a ${h.bodyLength}-byte body: nothing left to chunk`);
        }
        if (this.assembly.length < h.bodyLength) this.assembly = new Uint8Array(h.bodyLength);
        this.asmLength = h.bodyLength;
        this.asmKind = h.kind;
        this.asmFlags = h.flags;
        this.asmCallId = h.callId;
        this.asmAux = h.aux;
        this.assembly.set(this.bytes.subarray(p + FRAME_HEADER_BYTES, p + payload), 0);
        this.assembled = chunk;
        this.inFrame = true;
        return;
      }
      case RecordType.MIDDLE:
      case RecordType.LAST: {
        if (!this.inFrame) throw new CorruptSegmentError(`continuation chunk at ${idx} without a first chunk`);
        const end = this.assembled + payload;
        const last = type === RecordType.LAST;
        if (end > this.asmLength || (last && end !== this.asmLength) || (!last && end === this.asmLength)) {
          throw new CorruptSegmentError(
            `chunk at ${idx} brings a ${this.asmLength}-byte body to ${end} bytes${last ? " at its last chunk" : ""}`,
          );
        }
        this.assembly.set(this.bytes.subarray(p, p + payload), this.assembled);
        this.assembled = end;
        if (last) {
          this.inFrame = false;
          sink.onFrame(this.asmKind, this.asmFlags, this.asmCallId, this.asmAux, this.assembly.subarray(0, this.asmLength));
          // A one-off huge message should not pin its buffer for the life of the session.
          if (this.assembly.length > 4 * this.capacity) this.assembly = EMPTY;
        }
        return;
      }
      default:
        throw new CorruptSegmentError(`unknown record type ${type} at ${idx}`);
    }
  }

  /** Marks the consumer parked. The caller must re-check hasData() afterwards (see unpark). */
  park(): void {
    Atomics.store(this.ctrl, PARKED, 1);
  }

  /** Clears "parked" if the producer has not already done so (then a doorbell is on its way). */
  unpark(): void {
    Atomics.compareExchange(this.ctrl, PARKED, 1, 0);
  }

  /** After consuming: true if the producer was waiting for space (and is now marked served): ring back. */
  takeWaitingProducer(): boolean {
    return Atomics.load(this.ctrl, WAITING) === 1 && Atomics.compareExchange(this.ctrl, WAITING, 1, 0) === 1;
  }
}
